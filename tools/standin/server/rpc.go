package server

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/tdsgate/tdsgate/pkg/tds"
	"github.com/tdsgate/tdsgate/tools/standin/engine"
)

// rpc serves the procedure calls of an RPC request: sp_executesql and the
// prepared-statement procedures real drivers send.
func (c *conn) rpc(ctx context.Context, r *tds.RPCRequest, sk *sink) error {
	for i, call := range r.Calls {
		sk.inProc = true
		ret, err := c.call(ctx, call, sk)
		sk.inProc = false
		if err != nil {
			var se *engine.SQLError
			if !errors.As(err, &se) {
				return err
			}
			sk.Error(se)
		}
		sk.emit(tds.AppendReturnStatus(nil, 0))
		for _, rv := range ret {
			sk.emit(tds.AppendReturnValue(nil, rv, c.version))
		}
		var st uint16
		if err != nil {
			st |= tds.DoneError
		}
		if i < len(r.Calls)-1 {
			st |= tds.DoneRPCInBatch
		}
		sk.hold(tds.TokenDoneProc, tds.Done{Status: st, CurCmd: engine.CmdExecute})
		if i < len(r.Calls)-1 {
			sk.flushPending(true)
		}
	}
	return nil
}

func procNotFound(name string) *engine.SQLError {
	return &engine.SQLError{Number: 2812, State: 62, Class: 16, Message: fmt.Sprintf("Could not find stored procedure '%s'.", name), Line: 1}
}

// call runs one procedure and returns its output parameters.
func (c *conn) call(ctx context.Context, call tds.RPCCall, sk *sink) ([]*tds.ReturnValue, error) {
	name := strings.ToLower(call.ProcName)
	if i := strings.LastIndex(name, "."); i >= 0 {
		name = name[i+1:]
	}
	vals := make([]any, len(call.Params))
	for i, p := range call.Params {
		v, err := tds.DecodeValue(&p.Type, p.Value)
		if err != nil {
			return nil, &engine.SQLError{Number: 8016, State: 1, Class: 16, Message: fmt.Sprintf("The incoming tabular data stream (TDS) remote procedure call (RPC) protocol stream is incorrect. Parameter %d (\"%s\"): %v", i+1, p.Name, err), Line: 1}
		}
		vals[i] = v
	}
	str := func(i int) string {
		if i < len(vals) && vals[i] != nil {
			return toString(vals[i])
		}
		return ""
	}
	switch name {
	case "sp_executesql":
		if len(vals) == 0 {
			return nil, &engine.SQLError{Number: 201, State: 4, Class: 16, Message: "Procedure or function 'sp_executesql' expects parameter '@statement', which was not supplied.", Line: 1}
		}
		var params []engine.Param
		if len(vals) > 2 {
			params = bindParams(str(1), call.Params[2:], vals[2:])
		}
		return nil, c.sess.ExecBatch(ctx, str(0), params, sk)
	case "sp_prepare", "sp_prepexec":
		if len(vals) < 3 {
			return nil, &engine.SQLError{Number: 201, State: 4, Class: 16, Message: fmt.Sprintf("Procedure or function '%s' expects parameter '@stmt', which was not supplied.", name), Line: 1}
		}
		if c.prepared == nil {
			c.prepared = map[int32]prepared{}
		}
		c.nextHandle++
		h := c.nextHandle
		c.prepared[h] = prepared{decl: str(1), stmt: str(2)}
		ret := []*tds.ReturnValue{handleValue(call.Params[0].Name, h)}
		if name == "sp_prepare" {
			return ret, nil
		}
		err := c.sess.ExecBatch(ctx, str(2), bindParams(str(1), call.Params[3:], vals[3:]), sk)
		return ret, err
	case "sp_execute":
		h, err := toInt(vals[0])
		p, ok := c.prepared[int32(h)]
		if err != nil || !ok {
			return nil, &engine.SQLError{Number: 8179, State: 2, Class: 16, Message: fmt.Sprintf("Could not find prepared statement with handle %v.", vals[0]), Line: 1}
		}
		return nil, c.sess.ExecBatch(ctx, p.stmt, bindParams(p.decl, call.Params[1:], vals[1:]), sk)
	case "sp_unprepare":
		if len(vals) > 0 {
			h, _ := toInt(vals[0])
			delete(c.prepared, int32(h))
		}
		return nil, nil
	case "sp_reset_connection":
		return nil, c.sess.Reset()
	}
	return nil, procNotFound(call.ProcName)
}

func handleValue(name string, h int32) *tds.ReturnValue {
	if name == "" {
		name = "@handle"
	}
	return &tds.ReturnValue{Name: name, Status: 1, Type: tds.TypeInfo{Type: tds.TypeIntN, Size: 4}, Value: tds.EncodeInt(int64(h), 4)}
}

// bindParams names positional parameters after the declaration list
// ("@P0 int, @P1 nvarchar(4000)"): jTDS's sp_execute sends them unnamed.
func bindParams(decl string, ps []tds.RPCParam, vals []any) []engine.Param {
	names, types := declNames(decl)
	out := make([]engine.Param, len(ps))
	for i, p := range ps {
		n := p.Name
		if n == "" && i < len(names) {
			n = names[i]
		}
		typ := ""
		for j := range names {
			if strings.EqualFold(names[j], n) || strings.EqualFold(names[j], "@"+n) {
				typ = types[j]
				break
			}
		}
		out[i] = engine.Param{Name: n, Value: vals[i], Type: typ}
	}
	return out
}

// declNames splits a declaration list into parameter names and their
// declared types ("numeric(5,3)", "nvarchar(10) OUTPUT" → "nvarchar(10)").
func declNames(decl string) (names, types []string) {
	depth := 0
	start := 0
	for i := 0; i <= len(decl); i++ {
		if i < len(decl) {
			switch decl[i] {
			case '(':
				depth++
				continue
			case ')':
				depth--
				continue
			case ',':
				if depth > 0 {
					continue
				}
			default:
				continue
			}
		}
		f := strings.Fields(decl[start:i])
		if len(f) > 0 && strings.HasPrefix(f[0], "@") {
			names = append(names, f[0])
			typ := ""
			if len(f) > 1 {
				typ = f[1]
				if !strings.Contains(typ, ")") && strings.Contains(typ, "(") {
					// "decimal(5, 3)": the type's arguments hold a space.
					for _, more := range f[2:] {
						typ += more
						if strings.Contains(more, ")") {
							break
						}
					}
				}
			}
			types = append(types, typ)
		}
		start = i + 1
	}
	return names, types
}
