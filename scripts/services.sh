#!/usr/bin/env bash
# Makes sure Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432, trust auth,
# database `test`) run, installing them with apt-get when missing. The
# integration tests also start their own redis-server processes (a cluster, a
# server they kill), so the redis-server binary must exist.
set -euo pipefail

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v pg_ctlcluster >/dev/null 2>&1 || need_apt+=(postgresql)
command -v psql >/dev/null 2>&1 || need_apt+=(postgresql-client)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# promtool checks and unit-tests deploy/prometheus (deploy/prometheus_test.go). Debian ships it in
# the `prometheus` package, whose install would also set up and start a Prometheus server; only
# the promtool binary is taken out of the downloaded package instead.
# A failure here only warns: deploy/prometheus_test.go then fails with its own message under CI=true.
if ! command -v promtool >/dev/null 2>&1; then
  echo "== installing promtool (from Debian's prometheus package)"
  tmp=$(mktemp -d)
  # (errexit does not apply inside an if condition, hence the && chain)
  if ! (
    cd "$tmp" &&
      { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null; }; } &&
      dpkg-deb -x prometheus_*.deb root &&
      install -m 0755 root/usr/bin/promtool /usr/local/bin/promtool
  ); then
    echo "warning: could not install promtool"
  fi
  rm -rf "$tmp"
fi

# kubectl renders deploy/kubernetes's overlays (`kubectl kustomize`, what `kubectl apply -k` runs) in
# that module's tests. This kind of machine ships it (the `kubectl` package, kustomize v5 inside);
# elsewhere apt-get installs that package where a source carries it, and failing that the same
# kustomize is built from the Go module proxy (the tests use `kustomize build` when kubectl is
# missing or embeds a kustomize older than v5, as Debian's own kubernetes-client does).
# A failure here only warns: those tests then fail with their own message under CI=true.
kustomize_v5() {
  { command -v kubectl >/dev/null 2>&1 && kubectl version --client -o json 2>/dev/null | grep -q '"kustomizeVersion": "v5\.'; } ||
    command -v kustomize >/dev/null 2>&1
}
if ! kustomize_v5; then
  echo "== installing kubectl"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get install -y -qq kubectl >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq kubectl >/dev/null 2>&1; }; } || ! kustomize_v5; then
    echo "== no kubectl with kustomize v5 from apt; building kustomize from the Go module proxy"
    GOBIN=/usr/local/bin go install sigs.k8s.io/kustomize/kustomize/v5@v5.5.0 || echo "warning: could not install kubectl or kustomize"
  fi
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "== starting redis-server on 127.0.0.1:6379"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "== starting PostgreSQL"
  ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
  if [ -z "$ver" ]; then
    ver=$(ls /usr/lib/postgresql | sort -V | tail -n1)
    pg_createcluster "$ver" main >/dev/null
  fi
  conf=/etc/postgresql/$ver/main
  # Trust auth on loopback, as the tests expect (a fresh cluster uses peer/scram).
  if ! grep -q "sluice-trust" "$conf/pg_hba.conf"; then
    sed -i '1i host all all 127.0.0.1/32 trust # sluice-trust\nhost all all ::1/128 trust # sluice-trust\nlocal all all trust # sluice-trust' "$conf/pg_hba.conf"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start
fi

for i in $(seq 1 50); do
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && pg_isready -h 127.0.0.1 -p 5432 -q; then
    break
  fi
  sleep 0.2
done
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { echo "redis did not start"; exit 1; }
pg_isready -h 127.0.0.1 -p 5432 || { echo "postgresql did not start"; exit 1; }
psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" postgres | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" postgres >/dev/null
