package engine

import (
	"encoding/hex"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Kind is the SQL Server type of a result column.
type Kind uint8

// The column kinds the engine reports.
const (
	KindInt Kind = iota
	KindBigInt
	KindSmallInt
	KindTinyInt
	KindBit
	KindFloat
	KindReal
	KindDecimal
	KindNVarChar
	KindVarChar
	KindDateTime2
	KindDateTime
	KindVarBinary
	KindUniqueIdentifier
)

var kindNames = [...]string{
	KindInt: "int", KindBigInt: "bigint", KindSmallInt: "smallint", KindTinyInt: "tinyint",
	KindBit: "bit", KindFloat: "float", KindReal: "real", KindDecimal: "decimal",
	KindNVarChar: "nvarchar", KindVarChar: "varchar", KindDateTime2: "datetime2",
	KindDateTime: "datetime", KindVarBinary: "varbinary", KindUniqueIdentifier: "uniqueidentifier",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Column describes one column of a result set.
//
// Row values have these Go types: nil (NULL); int64 for KindInt, KindBigInt,
// KindSmallInt and KindTinyInt; bool for KindBit; float64 for KindFloat and
// KindReal; string for KindNVarChar, KindVarChar, KindUniqueIdentifier and
// KindDecimal (canonical, with exactly Scale fraction digits, e.g. "12.50");
// []byte for KindVarBinary; time.Time for KindDateTime2 and KindDateTime (the
// wall clock, in time.UTC; SQL Server's types carry no offset).
type Column struct {
	Name      string
	Kind      Kind
	Size      int   // chars for NVARCHAR/VARCHAR (-1 = MAX), bytes for VARBINARY (-1 = MAX)
	Precision uint8 // DECIMAL
	Scale     uint8 // DECIMAL, DATETIME2 (7)
	Nullable  bool
}

// TypeName renders the column type as T-SQL, e.g. "nvarchar(100)".
func (c Column) TypeName() string {
	switch c.Kind {
	case KindNVarChar, KindVarChar, KindVarBinary:
		if c.Size <= 0 {
			return c.Kind.String() + "(max)"
		}
		return fmt.Sprintf("%s(%d)", c.Kind, c.Size)
	case KindDecimal:
		return fmt.Sprintf("decimal(%d,%d)", c.Precision, c.Scale)
	case KindDateTime2:
		return fmt.Sprintf("datetime2(%d)", c.Scale)
	}
	return c.Kind.String()
}

// maxChars is the largest non-MAX NVARCHAR length.
const maxChars = 4000

// parseTypeName maps a T-SQL type name (as declared in DDL and kept by SQLite
// as the column's decltype, or as written in CAST) to a column description.
// castDefault is the length assumed for character types without one (30 in
// CAST/CONVERT, 1 in DDL). ok is false for an empty or unknown type.
func parseTypeName(decl string, castDefault int) (c Column, ok bool) {
	decl = strings.TrimSpace(decl)
	if decl == "" {
		return c, false
	}
	name, args := decl, ""
	if i := strings.IndexByte(decl, '('); i >= 0 {
		name = strings.TrimSpace(decl[:i])
		args = strings.TrimSuffix(strings.TrimSpace(decl[i+1:]), ")")
	}
	name = strings.ToUpper(strings.Trim(name, "[]\""))
	var nums []int
	isMax := false
	if args != "" {
		for _, a := range strings.Split(args, ",") {
			a = strings.TrimSpace(a)
			if strings.EqualFold(a, "MAX") {
				isMax = true
				nums = append(nums, -1)
				continue
			}
			v, err := strconv.Atoi(a)
			if err != nil {
				return c, false
			}
			nums = append(nums, v)
		}
	}
	size := func(def int) int {
		if isMax {
			return -1
		}
		if len(nums) > 0 {
			if nums[0] <= 0 {
				return -1
			}
			return nums[0]
		}
		return def
	}
	c.Nullable = true
	switch name {
	case "INT", "INTEGER":
		c.Kind = KindInt
	case "BIGINT":
		c.Kind = KindBigInt
	case "SMALLINT":
		c.Kind = KindSmallInt
	case "TINYINT":
		c.Kind = KindTinyInt
	case "BIT", "BOOLEAN", "BOOL":
		c.Kind = KindBit
	case "FLOAT", "DOUBLE", "DOUBLE PRECISION":
		c.Kind = KindFloat
		if len(nums) > 0 && nums[0] > 0 && nums[0] <= 24 {
			c.Kind = KindReal
		}
	case "REAL":
		c.Kind = KindReal
	case "DECIMAL", "NUMERIC", "DEC":
		c.Kind, c.Precision, c.Scale = KindDecimal, 18, 0
		if len(nums) > 0 && nums[0] > 0 && nums[0] <= 38 {
			c.Precision = uint8(nums[0])
		}
		if len(nums) > 1 && nums[1] >= 0 && nums[1] <= int(c.Precision) {
			c.Scale = uint8(nums[1])
		}
	case "MONEY":
		c.Kind, c.Precision, c.Scale = KindDecimal, 19, 4
	case "SMALLMONEY":
		c.Kind, c.Precision, c.Scale = KindDecimal, 10, 4
	case "NVARCHAR", "NCHAR", "NATIONAL CHARACTER VARYING", "NTEXT", "SYSNAME", "XML", "TEXT", "CHAR", "VARCHAR", "CHARACTER", "SQL_VARIANT":
		c.Kind = KindNVarChar
		if name == "VARCHAR" || name == "CHAR" || name == "CHARACTER" || name == "TEXT" {
			c.Kind = KindVarChar
		}
		switch name {
		case "NTEXT", "TEXT", "XML":
			c.Size = -1
		case "SYSNAME":
			c.Size = 128
		case "SQL_VARIANT":
			c.Size = maxChars
		default:
			c.Size = size(castDefault)
		}
	case "DATETIME2", "DATE", "TIME", "DATETIMEOFFSET":
		c.Kind, c.Scale = KindDateTime2, 7
		if len(nums) > 0 && nums[0] >= 0 && nums[0] <= 7 {
			c.Scale = uint8(nums[0])
		}
	case "DATETIME", "SMALLDATETIME", "TIMESTAMP":
		c.Kind = KindDateTime
	case "VARBINARY", "BINARY", "IMAGE", "BLOB", "ROWVERSION":
		c.Kind = KindVarBinary
		if name == "IMAGE" || name == "BLOB" {
			c.Size = -1
		} else {
			c.Size = size(castDefault)
		}
	case "UNIQUEIDENTIFIER":
		c.Kind = KindUniqueIdentifier
		c.Size = 16
	default:
		return c, false
	}
	return c, true
}

// sqliteCastType is the SQLite type to use in CAST for a T-SQL type.
func sqliteCastType(c Column) string {
	switch c.Kind {
	case KindInt, KindBigInt, KindSmallInt, KindTinyInt, KindBit:
		return "INTEGER"
	case KindFloat, KindReal:
		return "REAL"
	case KindDecimal:
		return "NUMERIC"
	case KindVarBinary:
		return "BLOB"
	}
	return "TEXT"
}

// inferColumn describes an expression column from a sample value.
func inferColumn(v any, multiRow bool) Column {
	c := Column{Nullable: true}
	switch x := v.(type) {
	case nil:
		c.Kind = KindInt
	case int64:
		c.Kind = KindInt
		if x < math.MinInt32 || x > math.MaxInt32 {
			c.Kind = KindBigInt
		}
	case int:
		c.Kind = KindInt
		if x < math.MinInt32 || x > math.MaxInt32 {
			c.Kind = KindBigInt
		}
	case int32, int16, int8, uint8, uint16:
		c.Kind = KindInt
	case uint32, uint64, uint:
		c.Kind = KindBigInt
	case bool:
		c.Kind = KindBit
	case float64, float32:
		c.Kind = KindFloat
	case []byte:
		c.Kind = KindVarBinary
		c.Size = 8000
		if len(x) > 8000 {
			c.Size = -1
		}
	case time.Time:
		c.Kind, c.Scale = KindDateTime2, 7
	case string:
		c.Kind = KindNVarChar
		n := utf8.RuneCountInString(x)
		switch {
		case n > maxChars:
			c.Size = -1
		case multiRow:
			c.Size = maxChars
		default:
			c.Size = max(n, 1)
		}
	default:
		c.Kind = KindNVarChar
		c.Size = maxChars
	}
	return c
}

// convError is a value that cannot be represented in its column's type.
type convError struct {
	number int32
	msg    string
}

// coerce converts a value read from SQLite to the Go type of kind k.
func coerce(v any, c *Column) (any, *convError) {
	if v == nil {
		return nil, nil
	}
	switch c.Kind {
	case KindInt, KindBigInt, KindSmallInt, KindTinyInt:
		var n int64
		switch x := v.(type) {
		case int64:
			n = x
		case float64:
			n = int64(x)
		case bool:
			if x {
				n = 1
			}
		case string:
			s := strings.TrimSpace(x)
			i, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				f, ferr := strconv.ParseFloat(s, 64)
				if ferr != nil {
					return nil, &convError{245, fmt.Sprintf("Conversion failed when converting the nvarchar value '%s' to data type %s.", x, c.Kind)}
				}
				i = int64(f)
			}
			n = i
		case []byte:
			return nil, &convError{245, fmt.Sprintf("Conversion failed when converting the varbinary value to data type %s.", c.Kind)}
		case time.Time:
			return nil, &convError{529, fmt.Sprintf("Explicit conversion from data type datetime2 to %s is not allowed.", c.Kind)}
		default:
			return nil, &convError{245, fmt.Sprintf("Conversion failed for data type %s.", c.Kind)}
		}
		lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
		switch c.Kind {
		case KindInt:
			lo, hi = math.MinInt32, math.MaxInt32
		case KindSmallInt:
			lo, hi = math.MinInt16, math.MaxInt16
		case KindTinyInt:
			lo, hi = 0, 255
		}
		if n < lo || n > hi {
			return nil, &convError{8115, fmt.Sprintf("Arithmetic overflow error converting expression to data type %s.", c.Kind)}
		}
		return n, nil
	case KindBit:
		switch x := v.(type) {
		case int64:
			return x != 0, nil
		case float64:
			return x != 0, nil
		case bool:
			return x, nil
		case string:
			switch strings.ToLower(strings.TrimSpace(x)) {
			case "1", "true":
				return true, nil
			case "0", "false":
				return false, nil
			}
			return nil, &convError{245, fmt.Sprintf("Conversion failed when converting the nvarchar value '%s' to data type bit.", x)}
		}
		return nil, &convError{245, "Conversion failed when converting to data type bit."}
	case KindFloat, KindReal:
		switch x := v.(type) {
		case float64:
			return x, nil
		case int64:
			return float64(x), nil
		case bool:
			if x {
				return 1.0, nil
			}
			return 0.0, nil
		case string:
			f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
			if err != nil {
				return nil, &convError{8114, fmt.Sprintf("Error converting data type nvarchar to %s.", c.Kind)}
			}
			return f, nil
		}
		return nil, &convError{8114, fmt.Sprintf("Error converting data type to %s.", c.Kind)}
	case KindDecimal:
		s, ok := formatDecimal(v, int(c.Scale))
		if !ok {
			return nil, &convError{8114, "Error converting data type nvarchar to numeric."}
		}
		if digitsBeforePoint(s) > int(c.Precision)-int(c.Scale) {
			return nil, &convError{8115, "Arithmetic overflow error converting expression to data type numeric."}
		}
		return s, nil
	case KindNVarChar, KindVarChar, KindUniqueIdentifier:
		switch x := v.(type) {
		case string:
			return x, nil
		case int64:
			return strconv.FormatInt(x, 10), nil
		case float64:
			return strconv.FormatFloat(x, 'g', -1, 64), nil
		case bool:
			if x {
				return "1", nil
			}
			return "0", nil
		case []byte:
			return string(x), nil
		case time.Time:
			return formatTime(x), nil
		}
		return fmt.Sprint(v), nil
	case KindVarBinary:
		switch x := v.(type) {
		case []byte:
			return x, nil
		case string:
			return []byte(x), nil
		case int64:
			b := make([]byte, 4)
			u := uint32(x)
			b[0], b[1], b[2], b[3] = byte(u>>24), byte(u>>16), byte(u>>8), byte(u)
			return b, nil
		}
		return nil, &convError{257, "Implicit conversion to varbinary is not allowed."}
	case KindDateTime2, KindDateTime:
		switch x := v.(type) {
		case time.Time:
			return wallUTC(x), nil
		case string:
			t, ok := parseTime(x)
			if !ok {
				return nil, &convError{241, "Conversion failed when converting date and/or time from character string."}
			}
			return t, nil
		case int64:
			// datetime arithmetic in days since 1900-01-01, as SQL Server does.
			return time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, int(x)), nil
		}
		return nil, &convError{241, "Conversion failed when converting date and/or time."}
	}
	return v, nil
}

func digitsBeforePoint(s string) int {
	s = strings.TrimPrefix(s, "-")
	if i := strings.IndexByte(s, '.'); i >= 0 {
		s = s[:i]
	}
	s = strings.TrimLeft(s, "0")
	return len(s)
}

// formatDecimal renders v with exactly scale fraction digits.
func formatDecimal(v any, scale int) (string, bool) {
	r := new(big.Rat)
	switch x := v.(type) {
	case int64:
		r.SetInt64(x)
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return "", false
		}
		// Round through the shortest decimal representation so 12.5 stays 12.5.
		if _, ok := r.SetString(strconv.FormatFloat(x, 'g', -1, 64)); !ok {
			return "", false
		}
	case string:
		if _, ok := r.SetString(strings.TrimSpace(x)); !ok {
			return "", false
		}
	case bool:
		if x {
			r.SetInt64(1)
		}
	default:
		return "", false
	}
	return r.FloatString(scale), true
}

// timeLayouts are the text forms accepted for date/time values.
var timeLayouts = []string{
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02T15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999 -0700 MST",
	"2006-01-02 15:04",
	"2006-01-02",
	"20060102",
	"20060102 15:04:05.999999999",
	"2006/01/02",
	"2006/01/02 15:04:05.999999999",
	"01/02/2006",
	"01/02/2006 15:04:05.999999999",
	"15:04:05.999999999",
}

// parseTime parses a date/time string into its wall clock in UTC.
func parseTime(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			if l == "15:04:05.999999999" {
				t = t.AddDate(1900, 0, 0)
			}
			return wallUTC(t), true
		}
	}
	return time.Time{}, false
}

// wallUTC keeps t's wall clock and drops its location.
func wallUTC(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
}

// formatTime renders a wall clock the way values are stored in SQLite.
func formatTime(t time.Time) string {
	return t.Format("2006-01-02 15:04:05.0000000")
}

// bindValue converts a Go parameter value into something SQLite stores well.
func bindValue(v any) any {
	switch x := v.(type) {
	case time.Time:
		return formatTime(x)
	case bool:
		if x {
			return int64(1)
		}
		return int64(0)
	case int:
		return int64(x)
	case int32:
		return int64(x)
	case int16:
		return int64(x)
	case int8:
		return int64(x)
	case uint8:
		return int64(x)
	case uint16:
		return int64(x)
	case uint32:
		return int64(x)
	case float32:
		return float64(x)
	case fmt.Stringer:
		return x.String()
	}
	return v
}

// newGUID returns a random version 4 UUID in canonical upper-case form.
func newGUID(b [16]byte) string {
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := strings.ToUpper(hex.EncodeToString(b[:]))
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
