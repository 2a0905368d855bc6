package server

// TenantDBInit is the runbook's tenant_db: test_table and a few seed rows,
// as the init-db container creates them on a real SQL Server.
const TenantDBInit = `CREATE TABLE test_table (id INT IDENTITY(1,1) PRIMARY KEY, name NVARCHAR(100), value INT);
INSERT INTO test_table (name, value) VALUES ('seed-1', 10), ('seed-2', 20), ('seed-3', 30);`

// RunbookConfig is a stand-in for bucket n (1..3) of the runbook: its own
// sa password (YourStr0ngP@ssword<n>) and tenant_db.
func RunbookConfig(n int, listen string) Config {
	return Config{
		Name:            "sqlserver-bucket-" + string(rune('0'+n)),
		Listen:          listen,
		Logins:          map[string]string{"sa": "YourStr0ngP@ssword" + string(rune('0'+n))},
		Databases:       map[string]string{"tenant_db": TenantDBInit},
		DefaultDatabase: "master",
	}
}
