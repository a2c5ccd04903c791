-- 0014_sql_reader: `ares sql` on PostgreSQL reads as `ares_reader`, a role with SELECT and no
-- other right. The statements below run on PostgreSQL only (SQLite refuses writes and ATTACH
-- through its read-only connection). `ares_read(query)` runs the query `ares sql` wraps as
-- `SELECT ARRAY[c1::text, ...] FROM (<query>) q(c1, ...)`; it is SECURITY DEFINER owned by
-- ares_reader, so the query runs with ares_reader's rights, and PostgreSQL refuses role changes
-- inside it (set_config('role', ...), SET ROLE, SET SESSION AUTHORIZATION): a superuser's URL
-- cannot undo the `SET ROLE ares_reader` from within the query. `COPY ... TO PROGRAM`,
-- pg_read_file, lo_export and writes are refused. Roles belong to the whole cluster: a second
-- store on it reuses the role. Without the right to create or grant roles the setup is left
-- out (a notice says so) and `ares sql` runs in a read-only transaction as the connecting role.

{postgresql} DO $$
BEGIN
    BEGIN
        CREATE ROLE ares_reader NOLOGIN;
    EXCEPTION WHEN duplicate_object THEN
        NULL;
    END;
    EXECUTE 'GRANT ares_reader TO ' || quote_ident(current_user);
    EXECUTE 'GRANT USAGE ON SCHEMA ' || quote_ident(current_schema()) || ' TO ares_reader';
    EXECUTE 'GRANT SELECT ON ALL TABLES IN SCHEMA ' || quote_ident(current_schema()) || ' TO ares_reader';
    EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA ' || quote_ident(current_schema())
        || ' GRANT SELECT ON TABLES TO ares_reader';
    CREATE FUNCTION ares_read(query text) RETURNS SETOF text[]
        LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
        AS $body$ BEGIN RETURN QUERY EXECUTE query; END $body$;
    ALTER FUNCTION ares_read(text) OWNER TO ares_reader;
    REVOKE ALL ON FUNCTION ares_read(text) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION ares_read(text) TO ares_reader;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE USING MESSAGE = 'ares_reader was not set up (' || SQLERRM || '): ares sql reads as the connecting role';
END $$;
