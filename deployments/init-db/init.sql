-- Run once by the init-db container on each SQL Server (idempotent).
IF DB_ID(N'tenant_db') IS NULL
    CREATE DATABASE tenant_db;
GO
USE tenant_db;
GO
IF OBJECT_ID(N'dbo.test_table', N'U') IS NULL
BEGIN
    CREATE TABLE dbo.test_table (
        id    INT IDENTITY(1,1) PRIMARY KEY,
        name  NVARCHAR(100),
        value INT
    );
    INSERT INTO dbo.test_table (name, value) VALUES (N'seed-1', 10), (N'seed-2', 20), (N'seed-3', 30);
END
GO
SELECT @@SERVERNAME AS server, COUNT(*) AS seed_rows FROM dbo.test_table;
GO
