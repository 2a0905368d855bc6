package server

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/tdsgate/tdsgate/pkg/tds"
	"github.com/tdsgate/tdsgate/tools/standin/engine"
)

// sink turns the engine's results into tokens on a response. The DONE of
// each statement is held back until the next token shows whether more
// follows (DONE_MORE) or the request ends.
type sink struct {
	c      *conn
	rp     *response
	cols   []tds.ColumnDef
	kinds  []engine.Column
	inProc bool // statements inside an RPC end with DONEINPROC

	pending     bool
	pendingType tds.TokenType
	pendingDone tds.Done
	sent        bool
	vals        [][]byte
	tmp         []byte
}

func (s *sink) flushPending(more bool) {
	if !s.pending {
		return
	}
	d := s.pendingDone
	if more {
		d.Status |= tds.DoneMore
	}
	s.rp.add(tds.AppendDone(s.tmp[:0], s.pendingType, d, s.c.version))
	s.pending = false
}

func (s *sink) emit(b []byte) {
	s.flushPending(true)
	s.rp.add(b)
	s.sent = true
}

// finish ends the request: the held DONE goes out without DONE_MORE, or a
// final DONE if nothing was sent.
func (s *sink) finish() {
	if s.pending {
		s.flushPending(false)
		return
	}
	if !s.sent {
		s.rp.add(tds.AppendDone(nil, tds.TokenDone, tds.Done{}, s.c.version))
	}
}

func (s *sink) hold(t tds.TokenType, d tds.Done) {
	s.flushPending(true)
	s.pending, s.pendingType, s.pendingDone, s.sent = true, t, d, true
}

func (s *sink) Columns(cols []engine.Column) error {
	s.kinds = cols
	s.cols = s.cols[:0]
	for _, col := range cols {
		s.cols = append(s.cols, tds.ColumnDef{Flags: tds.ColFlagNullable | 0x0008, Type: typeInfo(col, s.c.version), Name: col.Name})
	}
	s.emit(tds.AppendColMetadata(nil, s.cols, s.c.version))
	return s.rp.err
}

func (s *sink) Row(vals []any) error {
	if cap(s.vals) < len(vals) {
		s.vals = make([][]byte, len(vals))
	}
	s.vals = s.vals[:len(vals)]
	for i, v := range vals {
		b, err := encodeValue(&s.cols[i].Type, s.kinds[i], v)
		if err != nil {
			return fmt.Errorf("column %s: %w", s.cols[i].Name, err)
		}
		s.vals[i] = b
	}
	s.tmp = tds.AppendRow(s.tmp[:0], s.cols, s.vals)
	s.emit(s.tmp)
	return s.rp.err
}

func (s *sink) Done(d engine.Done) error {
	// SET LANGUAGE: tell the client, as SQL Server does, before the DONE.
	if l := s.c.sess.Language(); !strings.EqualFold(l, s.c.language) {
		s.emit(tds.AppendEnvChange(nil, tds.EnvString(tds.EnvLanguage, l, s.c.language)))
		s.c.language = l
		s.Info(tds.InfoNumLanguageChanged, fmt.Sprintf("Changed language setting to %s.", l))
	}
	// No DONE_INXACT: SQL Server does not set it (a real SQL Server 2008
	// answers BEGIN TRANSACTION with DONE status 0), nor does the stand-in.
	var st uint16
	if d.HasCount {
		st |= tds.DoneCount
	}
	if d.Error {
		st |= tds.DoneError
	}
	t := tds.TokenDone
	if s.inProc {
		t = tds.TokenDoneInProc
	}
	s.hold(t, tds.Done{Status: st, CurCmd: d.Cmd, RowCount: uint64(max(d.RowCount, 0))})
	return s.rp.err
}

func (s *sink) Error(e *engine.SQLError) error {
	s.emit(tds.AppendError(nil, &tds.ErrorToken{Number: e.Number, State: e.State, Class: e.Class, Message: e.Message, ServerName: s.c.srv.cfg.Name, LineNumber: e.Line}, false, s.c.version))
	return s.rp.err
}

func (s *sink) Info(number int32, msg string) error {
	s.emit(tds.AppendError(nil, &tds.ErrorToken{Number: number, State: 1, Class: 0, Message: msg, ServerName: s.c.srv.cfg.Name, LineNumber: 1}, true, s.c.version))
	return s.rp.err
}

func (s *sink) Tx(ev engine.TxEvent, trancount int) error {
	c := s.c
	c.trancount = trancount
	var desc [8]byte
	switch {
	case ev == engine.TxBegin && trancount == 1:
		c.txDesc = c.srv.txid.Add(1)
		binary.LittleEndian.PutUint64(desc[:], c.txDesc)
		s.emit(tds.AppendEnvChange(nil, tds.EnvChange{Type: tds.EnvBeginTran, New: desc[:]}))
	case (ev == engine.TxCommit || ev == engine.TxRollback) && trancount == 0 && c.txDesc != 0:
		binary.LittleEndian.PutUint64(desc[:], c.txDesc)
		t := tds.EnvCommitTran
		if ev == engine.TxRollback {
			t = tds.EnvRollbackTran
		}
		s.emit(tds.AppendEnvChange(nil, tds.EnvChange{Type: t, Old: desc[:]}))
		c.txDesc = 0
	}
	return s.rp.err
}

func (s *sink) Database(name string) error {
	s.emit(tds.AppendEnvChange(nil, tds.EnvString(tds.EnvDatabase, name, "master")))
	return s.Info(tds.InfoNumDatabaseChanged, fmt.Sprintf("Changed database context to '%s'.", name))
}

// typeInfo maps an engine column to the TYPE_INFO sent for it, within
// what the session's TDS version knows: TDS 7.1 has no DATETIME2 and no
// (MAX) types.
func typeInfo(col engine.Column, version uint32) tds.TypeInfo {
	modern := version >= tds.Version72
	switch col.Kind {
	case engine.KindInt:
		return tds.TypeInfo{Type: tds.TypeIntN, Size: 4}
	case engine.KindBigInt:
		return tds.TypeInfo{Type: tds.TypeIntN, Size: 8}
	case engine.KindSmallInt:
		return tds.TypeInfo{Type: tds.TypeIntN, Size: 2}
	case engine.KindTinyInt:
		return tds.TypeInfo{Type: tds.TypeIntN, Size: 1}
	case engine.KindBit:
		return tds.TypeInfo{Type: tds.TypeBitN, Size: 1}
	case engine.KindFloat:
		return tds.TypeInfo{Type: tds.TypeFltN, Size: 8}
	case engine.KindReal:
		return tds.TypeInfo{Type: tds.TypeFltN, Size: 4}
	case engine.KindDecimal:
		p := col.Precision
		if p == 0 {
			p = 18
		}
		return tds.TypeInfo{Type: tds.TypeNumericN, Size: tds.DecimalSize(p), Precision: p, Scale: col.Scale}
	case engine.KindDateTime2:
		if version >= tds.Version73A {
			return tds.TypeInfo{Type: tds.TypeDateTime2N, Scale: 7}
		}
		return tds.TypeInfo{Type: tds.TypeDateTimeN, Size: 8}
	case engine.KindDateTime:
		return tds.TypeInfo{Type: tds.TypeDateTimeN, Size: 8}
	case engine.KindVarBinary:
		if col.Size <= 0 || col.Size > 8000 {
			if modern {
				return tds.TypeInfo{Type: tds.TypeBigVarBin, Size: tds.MaxLen}
			}
			return tds.TypeInfo{Type: tds.TypeBigVarBin, Size: 8000}
		}
		return tds.TypeInfo{Type: tds.TypeBigVarBin, Size: col.Size}
	case engine.KindUniqueIdentifier:
		return tds.TypeInfo{Type: tds.TypeGUID, Size: 16}
	case engine.KindVarChar:
		if col.Size <= 0 || col.Size > 8000 {
			if modern {
				return tds.TypeInfo{Type: tds.TypeBigVarChar, Size: tds.MaxLen, Collation: tds.DefaultCollation}
			}
			return tds.TypeInfo{Type: tds.TypeBigVarChar, Size: 8000, Collation: tds.DefaultCollation}
		}
		return tds.TypeInfo{Type: tds.TypeBigVarChar, Size: col.Size, Collation: tds.DefaultCollation}
	}
	// NVARCHAR and anything else travels as text.
	if col.Size <= 0 || col.Size > 4000 {
		if modern {
			return tds.TypeInfo{Type: tds.TypeNVarChar, Size: tds.MaxLen, Collation: tds.DefaultCollation}
		}
		return tds.TypeInfo{Type: tds.TypeNVarChar, Size: 8000, Collation: tds.DefaultCollation}
	}
	return tds.TypeInfo{Type: tds.TypeNVarChar, Size: 2 * col.Size, Collation: tds.DefaultCollation}
}

// encodeValue encodes a Go value from the engine for a column's TYPE_INFO.
func encodeValue(ti *tds.TypeInfo, col engine.Column, v any) ([]byte, error) {
	if v == nil {
		return nil, nil
	}
	switch ti.Type {
	case tds.TypeIntN:
		n, err := toInt(v)
		return tds.EncodeInt(n, ti.Size), err
	case tds.TypeBitN:
		n, err := toInt(v)
		return tds.EncodeBool(n != 0), err
	case tds.TypeFltN:
		f, err := toFloat(v)
		if ti.Size == 4 {
			return binary.LittleEndian.AppendUint32(nil, math.Float32bits(float32(f))), err
		}
		return tds.EncodeFloat(f), err
	case tds.TypeNumericN, tds.TypeDecimalN:
		return tds.EncodeDecimal(toString(v), ti.Precision, ti.Scale)
	case tds.TypeDateTime2N, tds.TypeDateTimeN:
		t, err := toTime(v)
		if ti.Type == tds.TypeDateTimeN {
			return tds.EncodeDateTime(t), err
		}
		return tds.EncodeDateTime2(t, ti.Scale), err
	case tds.TypeBigVarBin:
		b, ok := v.([]byte)
		if !ok {
			b = []byte(toString(v))
		}
		if ti.Size != tds.MaxLen && len(b) > ti.Size {
			b = b[:ti.Size]
		}
		return b, nil
	case tds.TypeGUID:
		return encodeGUID(toString(v))
	case tds.TypeBigVarChar:
		b := []byte(toString(v))
		if ti.Size != tds.MaxLen && len(b) > ti.Size {
			b = b[:ti.Size]
		}
		return b, nil
	}
	b := tds.EncodeUCS2(toString(v))
	if ti.Size != tds.MaxLen && len(b) > ti.Size {
		b = b[:ti.Size&^1]
	}
	return b, nil
}

func toInt(v any) (int64, error) {
	switch x := v.(type) {
	case int64:
		return x, nil
	case int:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case bool:
		if x {
			return 1, nil
		}
		return 0, nil
	case float64:
		return int64(x), nil
	case string:
		if n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64); err == nil {
			return n, nil
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		return int64(f), err
	case []byte:
		return toInt(string(x))
	}
	return 0, fmt.Errorf("cannot convert %T to an integer", v)
}

func toFloat(v any) (float64, error) {
	switch x := v.(type) {
	case float64:
		return x, nil
	case int64:
		return float64(x), nil
	case bool:
		if x {
			return 1, nil
		}
		return 0, nil
	case string:
		return strconv.ParseFloat(strings.TrimSpace(x), 64)
	case []byte:
		return strconv.ParseFloat(strings.TrimSpace(string(x)), 64)
	}
	return 0, fmt.Errorf("cannot convert %T to a float", v)
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case time.Time:
		return x.Format("2006-01-02 15:04:05.0000000")
	case bool:
		if x {
			return "1"
		}
		return "0"
	}
	return fmt.Sprint(v)
}

var timeLayouts = []string{time.RFC3339Nano, "2006-01-02 15:04:05.9999999", "2006-01-02T15:04:05.9999999", "2006-01-02 15:04:05", "2006-01-02"}

func toTime(v any) (time.Time, error) {
	switch x := v.(type) {
	case time.Time:
		return x, nil
	case string:
		for _, l := range timeLayouts {
			if t, err := time.Parse(l, strings.TrimSpace(x)); err == nil {
				return t, nil
			}
		}
	}
	return time.Time{}, fmt.Errorf("cannot convert %v to a date and time", v)
}

// encodeGUID encodes "6F9619FF-8B86-D011-B42D-00C04FC964FF" in SQL
// Server's mixed-endian layout.
func encodeGUID(s string) ([]byte, error) {
	h, err := hex.DecodeString(strings.ReplaceAll(strings.Trim(s, "{}"), "-", ""))
	if err != nil || len(h) != 16 {
		return nil, fmt.Errorf("%q is not a uniqueidentifier", s)
	}
	b := make([]byte, 16)
	b[0], b[1], b[2], b[3] = h[3], h[2], h[1], h[0]
	b[4], b[5] = h[5], h[4]
	b[6], b[7] = h[7], h[6]
	copy(b[8:], h[8:])
	return b, nil
}
