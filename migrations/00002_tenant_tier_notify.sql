-- +goose Up
-- Every change of a tenant's tier (insert, tier update, delete) is announced on
-- channel sluice_tenant_tiers with the tenant id as payload; the tier store
-- (internal/pgtier) re-reads that tenant. NOTIFY is delivered at commit.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION sluice_notify_tenant_tier() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('sluice_tenant_tiers', OLD.id);
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.id <> NEW.id THEN
        PERFORM pg_notify('sluice_tenant_tiers', OLD.id);
    END IF;
    PERFORM pg_notify('sluice_tenant_tiers', NEW.id);
    RETURN NEW;
END
$$;
-- +goose StatementEnd

DROP TRIGGER IF EXISTS tenants_tier_notify ON tenants;
CREATE TRIGGER tenants_tier_notify
    AFTER INSERT OR DELETE OR UPDATE OF id, tier ON tenants
    FOR EACH ROW EXECUTE FUNCTION sluice_notify_tenant_tier();

-- +goose Down
DROP TRIGGER IF EXISTS tenants_tier_notify ON tenants;
DROP FUNCTION IF EXISTS sluice_notify_tenant_tier();
