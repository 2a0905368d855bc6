package engine

import (
	"strings"
)

// sp_datatype_info_100 (and sp_datatype_info): the catalog ODBC drivers read
// for SQLGetTypeInfo. pyodbc asks it on its first parameterized execute
// for SQL_VARCHAR, SQL_WVARCHAR, SQL_VARBINARY and SQL_TYPE_TIMESTAMP and
// reads PRECISION (the column size) of the first row: the longest
// VARCHAR/NVARCHAR/VARBINARY it binds as such, and how many fraction
// digits of a datetime parameter it sends. Only those types are listed;
// the rows follow SQL Server's (the first TIMESTAMP row is datetime, 23).

// typeInfoRow is one row of sp_datatype_info_100's result.
type typeInfoRow struct {
	name      string
	dataType  int64
	precision int64
	prefix    any
	suffix    any
	params    any
	userType  any
	minScale  any
	maxScale  any
	sub       any
	searchabl int64
}

var typeInfoRows = []typeInfoRow{
	{name: "nvarchar", dataType: -9, precision: 4000, prefix: "N'", suffix: "'", params: "max length", userType: int64(0), searchabl: 3},
	{name: "varbinary", dataType: -3, precision: 8000, prefix: "0x", params: "max length", userType: int64(4), searchabl: 2},
	{name: "varchar", dataType: 12, precision: 8000, prefix: "'", suffix: "'", params: "max length", userType: int64(2), searchabl: 3},
	{name: "datetime", dataType: 93, precision: 23, prefix: "'", suffix: "'", userType: int64(12), minScale: int64(3), maxScale: int64(3), sub: int64(3), searchabl: 3},
	{name: "smalldatetime", dataType: 93, precision: 16, prefix: "'", suffix: "'", userType: int64(22), minScale: int64(0), maxScale: int64(0), sub: int64(3), searchabl: 3},
	{name: "datetime2", dataType: 93, precision: 27, prefix: "'", suffix: "'", userType: int64(0), minScale: int64(0), maxScale: int64(7), sub: int64(3), searchabl: 3},
}

var typeInfoColumns = func() []Column {
	cols := []Column{
		{Name: "TYPE_NAME", Kind: KindNVarChar, Size: 128},
		{Name: "DATA_TYPE", Kind: KindSmallInt},
		{Name: "PRECISION", Kind: KindInt},
		{Name: "LITERAL_PREFIX", Kind: KindVarChar, Size: 32},
		{Name: "LITERAL_SUFFIX", Kind: KindVarChar, Size: 32},
		{Name: "CREATE_PARAMS", Kind: KindVarChar, Size: 32},
		{Name: "NULLABLE", Kind: KindSmallInt},
		{Name: "CASE_SENSITIVE", Kind: KindSmallInt},
		{Name: "SEARCHABLE", Kind: KindSmallInt},
		{Name: "UNSIGNED_ATTRIBUTE", Kind: KindSmallInt},
		{Name: "MONEY", Kind: KindSmallInt},
		{Name: "AUTO_INCREMENT", Kind: KindSmallInt},
		{Name: "LOCAL_TYPE_NAME", Kind: KindNVarChar, Size: 128},
		{Name: "MINIMUM_SCALE", Kind: KindSmallInt},
		{Name: "MAXIMUM_SCALE", Kind: KindSmallInt},
		{Name: "SQL_DATA_TYPE", Kind: KindSmallInt},
		{Name: "SQL_DATETIME_SUB", Kind: KindSmallInt},
		{Name: "NUM_PREC_RADIX", Kind: KindInt},
		{Name: "INTERVAL_PRECISION", Kind: KindSmallInt},
		{Name: "USERTYPE", Kind: KindSmallInt},
	}
	for i := range cols {
		cols[i].Nullable = true
	}
	return cols
}()

// datatypeInfo answers EXEC sp_datatype_info_100 [@data_type [, @ODBCVer]]
// with args the tokens after the procedure name.
func (r *runner) datatypeInfo(args []token) error {
	var want any
	if len(args) > 0 {
		end := len(args)
		for i, t := range args {
			if t.isOp(",") {
				end = i
				break
			}
		}
		v, err := r.eval(args[:end])
		if err != nil {
			return err
		}
		want = v
	}
	wantType, filter := toInt64(want)
	if err := r.sink.Columns(typeInfoColumns); err != nil {
		return transport{err}
	}
	n := int64(0)
	for _, t := range typeInfoRows {
		if filter && t.dataType != wantType {
			continue
		}
		sqlType := any(t.dataType)
		if t.dataType == 93 {
			sqlType = int64(9) // SQL_DATETIME, with SQL_DATETIME_SUB 3
		}
		row := []any{t.name, t.dataType, t.precision, t.prefix, t.suffix, t.params, int64(1), int64(0), t.searchabl, nil, int64(0), nil,
			t.name, t.minScale, t.maxScale, sqlType, t.sub, nil, nil, t.userType}
		if strings.HasPrefix(t.name, "n") || strings.HasPrefix(t.name, "var") {
			row[7] = int64(0)
		}
		if err := r.sink.Row(row); err != nil {
			return transport{err}
		}
		n++
	}
	return r.done(n, true)
}

// toInt64 reads an integer argument; ok is false for NULL or a non-number.
func toInt64(v any) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case float64:
		return int64(x), true
	}
	return 0, false
}
