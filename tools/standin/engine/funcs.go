package engine

import (
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	sqlite "modernc.org/sqlite"
	"modernc.org/sqlite/vtab"
)

// driverName is the private database/sql driver the engine registers: a
// modernc.org/sqlite driver carrying the T-SQL helper functions and the
// number-series virtual tables, so nothing leaks into the process-wide
// "sqlite" driver other packages may use.
const driverName = "tdsgate-standin-sqlite"

var registerOnce sync.Once

func registerDriver() {
	registerOnce.Do(func() {
		d := &sqlite.Driver{}
		for name, f := range scalarFuncs {
			impl := &sqlite.FunctionImpl{NArgs: f.nargs, Deterministic: f.det, Scalar: f.fn}
			if err := d.RegisterFunction(name, impl); err != nil {
				panic(fmt.Sprintf("engine: register %s: %v", name, err))
			}
		}
		if err := d.RegisterModule("generate_series", &seriesModule{col: "value", defStop: 4294967295}); err != nil {
			panic(err)
		}
		if err := d.RegisterModule("standin_numbers", &seriesModule{col: "n", defStop: math.MaxInt32}); err != nil {
			panic(err)
		}
		sql.Register(driverName, d)
	})
}

type scalarFunc struct {
	nargs int32
	det   bool
	fn    func(ctx *sqlite.FunctionContext, args []driver.Value) (driver.Value, error)
}

func nowLocal() time.Time { return wallUTC(time.Now()) }

func argString(v driver.Value) (string, bool) {
	switch x := v.(type) {
	case nil:
		return "", false
	case string:
		return x, true
	case []byte:
		return string(x), true
	case int64:
		return strconv.FormatInt(x, 10), true
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), true
	case time.Time:
		return formatTime(x), true
	}
	return fmt.Sprint(v), true
}

func argInt(v driver.Value) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case float64:
		return int64(x), true
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		return n, err == nil
	}
	return 0, false
}

func argTime(v driver.Value) (time.Time, bool) {
	switch x := v.(type) {
	case time.Time:
		return wallUTC(x), true
	case string:
		return parseTime(x)
	case int64:
		return time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, int(x)), true
	}
	return time.Time{}, false
}

var errDatePart = errors.New("invalid datepart")

func datePart(v driver.Value) (string, error) {
	s, _ := argString(v)
	switch strings.ToLower(strings.Trim(s, "'\"[] ")) {
	case "year", "yy", "yyyy":
		return "year", nil
	case "quarter", "qq", "q":
		return "quarter", nil
	case "month", "mm", "m":
		return "month", nil
	case "dayofyear", "dy", "y":
		return "dayofyear", nil
	case "day", "dd", "d":
		return "day", nil
	case "week", "wk", "ww":
		return "week", nil
	case "weekday", "dw", "w":
		return "weekday", nil
	case "hour", "hh":
		return "hour", nil
	case "minute", "mi", "n":
		return "minute", nil
	case "second", "ss", "s":
		return "second", nil
	case "millisecond", "ms":
		return "millisecond", nil
	case "microsecond", "mcs":
		return "microsecond", nil
	case "nanosecond", "ns":
		return "nanosecond", nil
	}
	return "", errDatePart
}

var scalarFuncs = map[string]scalarFunc{
	"getdate": {0, false, func(*sqlite.FunctionContext, []driver.Value) (driver.Value, error) {
		return formatTime(nowLocal()), nil
	}},
	"sysdatetime": {0, false, func(*sqlite.FunctionContext, []driver.Value) (driver.Value, error) {
		return formatTime(nowLocal()), nil
	}},
	"getutcdate": {0, false, func(*sqlite.FunctionContext, []driver.Value) (driver.Value, error) {
		return formatTime(time.Now().UTC()), nil
	}},
	"sysutcdatetime": {0, false, func(*sqlite.FunctionContext, []driver.Value) (driver.Value, error) {
		return formatTime(time.Now().UTC()), nil
	}},
	"newid": {0, false, func(*sqlite.FunctionContext, []driver.Value) (driver.Value, error) {
		var b [16]byte
		_, _ = rand.Read(b[:])
		return newGUID(b), nil
	}},
	"rand": {-1, false, func(*sqlite.FunctionContext, []driver.Value) (driver.Value, error) { return mrand.Float64(), nil }},
	"len": {1, true, func(_ *sqlite.FunctionContext, a []driver.Value) (driver.Value, error) {
		s, ok := argString(a[0])
		if !ok {
			return nil, nil
		}
		return int64(utf8.RuneCountInString(strings.TrimRight(s, " "))), nil
	}},
	"datalength": {1, true, func(_ *sqlite.FunctionContext, a []driver.Value) (driver.Value, error) {
		switch x := a[0].(type) {
		case nil:
			return nil, nil
		case []byte:
			return int64(len(x)), nil
		case int64:
			return int64(4), nil
		case float64:
			return int64(8), nil
		case string:
			return int64(2 * len(utf16.Encode([]rune(x)))), nil
		}
		return nil, nil
	}},
	"charindex": {-1, true, func(_ *sqlite.FunctionContext, a []driver.Value) (driver.Value, error) {
		if len(a) < 2 {
			return nil, errors.New("wrong number of arguments to function charindex()")
		}
		needle, ok1 := argString(a[0])
		hay, ok2 := argString(a[1])
		if !ok1 || !ok2 {
			return nil, nil
		}
		start := int64(1)
		if len(a) > 2 {
			if s, ok := argInt(a[2]); ok && s > 1 {
				start = s
			}
		}
		r := []rune(hay)
		if int(start-1) > len(r) {
			return int64(0), nil
		}
		i := strings.Index(strings.ToLower(string(r[start-1:])), strings.ToLower(needle))
		if i < 0 {
			return int64(0), nil
		}
		return start + int64(utf8.RuneCountInString(string(r[start-1:])[:i])), nil
	}},
	"standin_left": {2, true, func(_ *sqlite.FunctionContext, a []driver.Value) (driver.Value, error) {
		s, ok := argString(a[0])
		n, ok2 := argInt(a[1])
		if !ok || !ok2 {
			return nil, nil
		}
		r := []rune(s)
		if n < 0 {
			n = 0
		}
		if int(n) < len(r) {
			r = r[:n]
		}
		return string(r), nil
	}},
	"standin_right": {2, true, func(_ *sqlite.FunctionContext, a []driver.Value) (driver.Value, error) {
		s, ok := argString(a[0])
		n, ok2 := argInt(a[1])
		if !ok || !ok2 {
			return nil, nil
		}
		r := []rune(s)
		if n < 0 {
			n = 0
		}
		if int(n) < len(r) {
			r = r[len(r)-int(n):]
		}
		return string(r), nil
	}},
	"replicate": {2, true, func(_ *sqlite.FunctionContext, a []driver.Value) (driver.Value, error) {
		s, ok := argString(a[0])
		n, ok2 := argInt(a[1])
		if !ok || !ok2 || n < 0 {
			return nil, nil
		}
		return strings.Repeat(s, int(min(n, 1<<20))), nil
	}},
	"space": {1, true, func(_ *sqlite.FunctionContext, a []driver.Value) (driver.Value, error) {
		n, ok := argInt(a[0])
		if !ok || n < 0 {
			return nil, nil
		}
		return strings.Repeat(" ", int(min(n, 8000))), nil
	}},
	"reverse": {1, true, func(_ *sqlite.FunctionContext, a []driver.Value) (driver.Value, error) {
		s, ok := argString(a[0])
		if !ok {
			return nil, nil
		}
		r := []rune(s)
		for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
			r[i], r[j] = r[j], r[i]
		}
		return string(r), nil
	}},
	"isnumeric": {1, true, func(_ *sqlite.FunctionContext, a []driver.Value) (driver.Value, error) {
		switch x := a[0].(type) {
		case int64, float64:
			return int64(1), nil
		case string:
			if _, err := strconv.ParseFloat(strings.TrimSpace(x), 64); err == nil {
				return int64(1), nil
			}
		}
		return int64(0), nil
	}},
	"year":  {1, true, timeField(func(t time.Time) int64 { return int64(t.Year()) })},
	"month": {1, true, timeField(func(t time.Time) int64 { return int64(t.Month()) })},
	"day":   {1, true, timeField(func(t time.Time) int64 { return int64(t.Day()) })},
	"datepart": {2, true, func(_ *sqlite.FunctionContext, a []driver.Value) (driver.Value, error) {
		p, err := datePart(a[0])
		if err != nil {
			return nil, err
		}
		t, ok := argTime(a[1])
		if !ok {
			return nil, nil
		}
		return datePartOf(p, t), nil
	}},
	"dateadd": {3, true, func(_ *sqlite.FunctionContext, a []driver.Value) (driver.Value, error) {
		p, err := datePart(a[0])
		if err != nil {
			return nil, err
		}
		n, ok := argInt(a[1])
		t, ok2 := argTime(a[2])
		if !ok || !ok2 {
			return nil, nil
		}
		switch p {
		case "year":
			t = t.AddDate(int(n), 0, 0)
		case "quarter":
			t = t.AddDate(0, 3*int(n), 0)
		case "month":
			t = t.AddDate(0, int(n), 0)
		case "day", "dayofyear", "weekday":
			t = t.AddDate(0, 0, int(n))
		case "week":
			t = t.AddDate(0, 0, 7*int(n))
		case "hour":
			t = t.Add(time.Duration(n) * time.Hour)
		case "minute":
			t = t.Add(time.Duration(n) * time.Minute)
		case "second":
			t = t.Add(time.Duration(n) * time.Second)
		case "millisecond":
			t = t.Add(time.Duration(n) * time.Millisecond)
		case "microsecond":
			t = t.Add(time.Duration(n) * time.Microsecond)
		case "nanosecond":
			t = t.Add(time.Duration(n))
		}
		return formatTime(t), nil
	}},
	"datediff": {3, true, func(_ *sqlite.FunctionContext, a []driver.Value) (driver.Value, error) {
		p, err := datePart(a[0])
		if err != nil {
			return nil, err
		}
		t1, ok := argTime(a[1])
		t2, ok2 := argTime(a[2])
		if !ok || !ok2 {
			return nil, nil
		}
		switch p {
		case "year":
			return int64(t2.Year() - t1.Year()), nil
		case "quarter":
			return int64((t2.Year()-t1.Year())*4 + (int(t2.Month())-1)/3 - (int(t1.Month())-1)/3), nil
		case "month":
			return int64((t2.Year()-t1.Year())*12 + int(t2.Month()) - int(t1.Month())), nil
		case "day", "dayofyear", "weekday":
			d1 := time.Date(t1.Year(), t1.Month(), t1.Day(), 0, 0, 0, 0, time.UTC)
			d2 := time.Date(t2.Year(), t2.Month(), t2.Day(), 0, 0, 0, 0, time.UTC)
			return int64(d2.Sub(d1) / (24 * time.Hour)), nil
		case "week":
			d1 := time.Date(t1.Year(), t1.Month(), t1.Day(), 0, 0, 0, 0, time.UTC)
			d2 := time.Date(t2.Year(), t2.Month(), t2.Day(), 0, 0, 0, 0, time.UTC)
			d1 = d1.AddDate(0, 0, -int(d1.Weekday()))
			d2 = d2.AddDate(0, 0, -int(d2.Weekday()))
			return int64(d2.Sub(d1) / (7 * 24 * time.Hour)), nil
		case "hour":
			return int64(t2.Truncate(time.Hour).Sub(t1.Truncate(time.Hour)) / time.Hour), nil
		case "minute":
			return int64(t2.Truncate(time.Minute).Sub(t1.Truncate(time.Minute)) / time.Minute), nil
		case "second":
			return int64(t2.Truncate(time.Second).Sub(t1.Truncate(time.Second)) / time.Second), nil
		case "millisecond":
			return int64(t2.Sub(t1) / time.Millisecond), nil
		case "microsecond":
			return int64(t2.Sub(t1) / time.Microsecond), nil
		}
		return int64(t2.Sub(t1)), nil
	}},
	// standin_objname strips database, schema and brackets from an object
	// name as OBJECT_ID accepts it: 'tenant_db.dbo.[t]' -> 't'.
	"standin_objname": {1, true, func(_ *sqlite.FunctionContext, a []driver.Value) (driver.Value, error) {
		s, ok := argString(a[0])
		if !ok {
			return nil, nil
		}
		return objectBaseName(s), nil
	}},
}

func objectBaseName(s string) string {
	parts := strings.Split(s, ".")
	last := strings.TrimSpace(parts[len(parts)-1])
	return strings.Trim(last, "[]\"")
}

func timeField(f func(time.Time) int64) func(*sqlite.FunctionContext, []driver.Value) (driver.Value, error) {
	return func(_ *sqlite.FunctionContext, a []driver.Value) (driver.Value, error) {
		t, ok := argTime(a[0])
		if !ok {
			return nil, nil
		}
		return f(t), nil
	}
}

func datePartOf(p string, t time.Time) int64 {
	switch p {
	case "year":
		return int64(t.Year())
	case "quarter":
		return int64((int(t.Month())-1)/3 + 1)
	case "month":
		return int64(t.Month())
	case "dayofyear":
		return int64(t.YearDay())
	case "day":
		return int64(t.Day())
	case "week":
		_, w := t.ISOWeek()
		return int64(w)
	case "weekday":
		return int64(t.Weekday()) + 1
	case "hour":
		return int64(t.Hour())
	case "minute":
		return int64(t.Minute())
	case "second":
		return int64(t.Second())
	case "millisecond":
		return int64(t.Nanosecond() / 1e6)
	case "microsecond":
		return int64(t.Nanosecond() / 1e3)
	}
	return int64(t.Nanosecond())
}

// seriesModule is an eponymous table-valued function producing integers:
//
//	SELECT value FROM generate_series(1, 100000[, step])
//	SELECT TOP 100000 n FROM standin_numbers           -- 1, 2, 3, ...
//	SELECT n FROM standin_numbers WHERE n <= 500
//
// Rows are generated on demand, so a huge series streams in constant memory.
type seriesModule struct {
	col     string
	defStop int64
}

func (m *seriesModule) Create(ctx vtab.Context, args []string) (vtab.Table, error) {
	return m.Connect(ctx, args)
}

func (m *seriesModule) Connect(ctx vtab.Context, _ []string) (vtab.Table, error) {
	if err := ctx.Declare(fmt.Sprintf("CREATE TABLE x(%s INT, start HIDDEN, stop HIDDEN, step HIDDEN)", m.col)); err != nil {
		return nil, err
	}
	return &seriesTable{m: m}, nil
}

type seriesTable struct{ m *seriesModule }

// Plan bits in IdxNum: which argv slots are present, in order.
const (
	planStart = 1 << iota
	planStop
	planStep
	planGE
	planGT
	planLE
	planLT
	planEQ
)

func (t *seriesTable) BestIndex(info *vtab.IndexInfo) error {
	// Each plan bit takes the next argv slot, in bit order.
	slot := map[int]int{}
	for i, c := range info.Constraints {
		if !c.Usable {
			continue
		}
		bit := 0
		switch {
		case c.Column == 1 && c.Op == vtab.OpEQ:
			bit = planStart
		case c.Column == 2 && c.Op == vtab.OpEQ:
			bit = planStop
		case c.Column == 3 && c.Op == vtab.OpEQ:
			bit = planStep
		case c.Column == 0 && c.Op == vtab.OpGE:
			bit = planGE
		case c.Column == 0 && c.Op == vtab.OpGT:
			bit = planGT
		case c.Column == 0 && c.Op == vtab.OpLE:
			bit = planLE
		case c.Column == 0 && c.Op == vtab.OpLT:
			bit = planLT
		case c.Column == 0 && c.Op == vtab.OpEQ:
			bit = planEQ
		}
		if bit == 0 {
			continue
		}
		if _, dup := slot[bit]; dup {
			continue
		}
		slot[bit] = i
	}
	idx := 0
	arg := 0
	for bit := planStart; bit <= planEQ; bit <<= 1 {
		i, ok := slot[bit]
		if !ok {
			continue
		}
		idx |= bit
		info.Constraints[i].ArgIndex = arg
		info.Constraints[i].Omit = bit <= planStep
		arg++
	}
	info.IdxNum = int64(idx)
	info.EstimatedCost = 1000
	if len(info.OrderBy) == 1 && info.OrderBy[0].Column == 0 && !info.OrderBy[0].Desc {
		info.OrderByConsumed = true
	}
	return nil
}

func (t *seriesTable) Open() (vtab.Cursor, error) { return &seriesCursor{t: t}, nil }
func (t *seriesTable) Disconnect() error          { return nil }
func (t *seriesTable) Destroy() error             { return nil }

type seriesCursor struct {
	t                 *seriesTable
	start, stop, step int64
	cur               int64
}

func (c *seriesCursor) Filter(idxNum int, _ string, vals []vtab.Value) error {
	c.start, c.stop, c.step = 1, c.t.m.defStop, 1
	arg := 0
	next := func() (int64, bool) {
		if arg >= len(vals) {
			return 0, false
		}
		v := vals[arg]
		arg++
		n, ok := argInt(v)
		if f, isF := v.(float64); isF {
			return int64(math.Ceil(f)), true
		}
		return n, ok
	}
	empty := false
	for bit := planStart; bit <= planEQ; bit <<= 1 {
		if idxNum&bit == 0 {
			continue
		}
		n, ok := next()
		if !ok {
			empty = true
			continue
		}
		switch bit {
		case planStart:
			c.start = n
		case planStop:
			c.stop = n
		case planStep:
			if n != 0 {
				c.step = n
			}
		case planGE:
			c.start = max(c.start, n)
		case planGT:
			c.start = max(c.start, n+1)
		case planLE:
			c.stop = min(c.stop, n)
		case planLT:
			c.stop = min(c.stop, n-1)
		case planEQ:
			c.start, c.stop = max(c.start, n), min(c.stop, n)
		}
	}
	if idxNum&planStart != 0 && idxNum&planStop == 0 && c.t.m.col == "value" {
		c.stop = c.t.m.defStop
	}
	c.cur = c.start
	if empty {
		c.cur, c.stop, c.step = 1, 0, 1
	}
	return nil
}

func (c *seriesCursor) Next() error { c.cur += c.step; return nil }
func (c *seriesCursor) Eof() bool {
	if c.step < 0 {
		return c.cur < c.stop
	}
	return c.cur > c.stop
}

func (c *seriesCursor) Column(col int) (vtab.Value, error) {
	switch col {
	case 0:
		return c.cur, nil
	case 1:
		return c.start, nil
	case 2:
		return c.stop, nil
	}
	return c.step, nil
}

func (c *seriesCursor) Rowid() (int64, error) { return c.cur, nil }
func (c *seriesCursor) Close() error          { return nil }
