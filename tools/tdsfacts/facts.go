package tdsfacts

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/tdsgate/tdsgate/pkg/tds"
)

// Request is one client request of the capture, as facts.
type Request struct {
	// Stream is the capture's TCP stream (one client session) and Seq the
	// request's place in it (1 = the first request the capture holds).
	Stream, Seq int
	Name        string
	// Length is the message's size on the wire as captured, packet
	// headers included: what Packets must produce.
	Length int
	Type   tds.PacketType // PacketSQLBatch or PacketRPC
	// Status is the first packet's status byte as sent: 0x01 (EOM), 0x09
	// (EOM|RESETCONNECTION), or 0x04 on the first packet of a message that
	// spans packets (an undocumented bit; the last packet carried 0x01).
	Status uint8
	// PacketSize is where the client split the message (header included);
	// 0 when it fits one packet.
	PacketSize int

	// SQL batch: the text. NoAllHeaders: sent without ALL_HEADERS (as a
	// TDS 7.1 client does); otherwise with the default transaction
	// descriptor header (descriptor 0, one outstanding request).
	SQL          string
	NoAllHeaders bool

	// RPC: the calls, and ALL_HEADERS as sent (with NoAllHeaders, none).
	Calls   []tds.RPCCall
	Headers tds.AllHeaders
}

// Payload encodes the request's message payload with pkg/tds.
func (r Request) Payload() []byte {
	switch {
	case r.Type == tds.PacketSQLBatch && r.NoAllHeaders:
		return tds.EncodeUCS2(r.SQL)
	case r.Type == tds.PacketSQLBatch:
		h := r.Headers
		return tds.AppendSQLBatch(nil, &h, r.SQL)
	case r.NoAllHeaders:
		return tds.AppendRPC71(nil, r.Calls)
	}
	h := r.Headers
	return tds.AppendRPC(nil, &h, r.Calls)
}

// Packets encodes the whole message as the client sent it: split at
// PacketSize, packet ids from 1, SPID 0, Status on the first packet, 0x00
// on middle packets and EOM on the last (0x01, or Status when it is the
// only packet).
func (r Request) Packets() []byte {
	payload := r.Payload()
	room := len(payload)
	if r.PacketSize > 0 {
		room = r.PacketSize - tds.HeaderLen
	}
	var out []byte
	for id := uint8(1); ; id++ {
		n := min(room, len(payload))
		st := uint8(0)
		if id == 1 {
			st = r.Status &^ tds.StatusEOM
		}
		if n == len(payload) {
			st |= tds.StatusEOM
		}
		var h [tds.HeaderLen]byte
		tds.Header{Type: r.Type, Status: st, Length: uint16(tds.HeaderLen + n), PacketID: id}.Put(h[:])
		out = append(append(out, h[:]...), payload[:n]...)
		payload = payload[n:]
		if len(payload) == 0 {
			return out
		}
	}
}

// Get returns request seq of stream; it panics on a request the capture
// does not hold (a test's typo).
func Get(stream, seq int) Request {
	for _, r := range Requests {
		if r.Stream == stream && r.Seq == seq {
			return r
		}
	}
	panic(fmt.Sprintf("tdsfacts: no request %d/%d", stream, seq))
}

// Collations seen in the capture: SQL Server's default
// (SQL_Latin1_General_CP1_CI_AS), and two others some clients sent.
var (
	collDefault = tds.DefaultCollation
	collClient8 = tds.Collation{0x09, 0x04, 0x00, 0x01, 0x32}
	collClient9 = tds.Collation{0x09, 0x04, 0x10, 0x00, 0x00}
)

// Parameter builders: a TYPE_INFO and the value's wire bytes, as pkg/tds
// decodes them.
func intN(size int, v int64) tds.RPCParam {
	return tds.RPCParam{Type: tds.TypeInfo{Type: tds.TypeIntN, Size: size}, Value: tds.EncodeInt(v, size)}
}

func intNull(size int) tds.RPCParam {
	return tds.RPCParam{Type: tds.TypeInfo{Type: tds.TypeIntN, Size: size}}
}

// nvarchar is an NVARCHAR parameter; an empty string is a zero-length
// value, not NULL.
func nvarchar(size int, coll tds.Collation, s string) tds.RPCParam {
	return tds.RPCParam{Type: tds.TypeInfo{Type: tds.TypeNVarChar, Size: size, Collation: coll}, Value: append([]byte{}, tds.EncodeUCS2(s)...)}
}

func nvarcharNull(size int, coll tds.Collation) tds.RPCParam {
	return tds.RPCParam{Type: tds.TypeInfo{Type: tds.TypeNVarChar, Size: size, Collation: coll}}
}

func varchar(size int, coll tds.Collation, s string) tds.RPCParam {
	return tds.RPCParam{Type: tds.TypeInfo{Type: tds.TypeBigVarChar, Size: size, Collation: coll}, Value: []byte(s)}
}

func varbinary(size int, hexv string) tds.RPCParam {
	b, err := hex.DecodeString(hexv)
	if err != nil {
		panic(err)
	}
	return tds.RPCParam{Type: tds.TypeInfo{Type: tds.TypeBigVarBin, Size: size}, Value: b}
}

// guid encodes a GUID's text form as SQL Server sends it (the first three
// groups little-endian).
func guid(s string) tds.RPCParam {
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 {
		panic("tdsfacts: bad GUID " + s)
	}
	w := make([]byte, 16)
	binary.LittleEndian.PutUint32(w, binary.BigEndian.Uint32(b))
	binary.LittleEndian.PutUint16(w[4:], binary.BigEndian.Uint16(b[4:]))
	binary.LittleEndian.PutUint16(w[6:], binary.BigEndian.Uint16(b[6:]))
	copy(w[8:], b[8:])
	return tds.RPCParam{Type: tds.TypeInfo{Type: tds.TypeGUID, Size: 16}, Value: w}
}

func guidNull() tds.RPCParam { return tds.RPCParam{Type: tds.TypeInfo{Type: tds.TypeGUID, Size: 16}} }

func bitN(v bool) tds.RPCParam {
	return tds.RPCParam{Type: tds.TypeInfo{Type: tds.TypeBitN, Size: 1}, Value: tds.EncodeBool(v)}
}

func bitNull() tds.RPCParam { return tds.RPCParam{Type: tds.TypeInfo{Type: tds.TypeBitN, Size: 1}} }

func datetimeN(t time.Time) tds.RPCParam {
	return tds.RPCParam{Type: tds.TypeInfo{Type: tds.TypeDateTimeN, Size: 8}, Value: tds.EncodeDateTime(t)}
}

// null is a parameter of the NULL type (0x1F): no length, no value.
func null() tds.RPCParam {
	return tds.RPCParam{Type: tds.TypeInfo{Type: tds.TypeNull}, Value: []byte{}}
}

func named(name string, p tds.RPCParam) tds.RPCParam { p.Name = name; return p }

func byRef(p tds.RPCParam) tds.RPCParam { p.Status |= tds.ParamByRef; return p }

// stmt is an NVARCHAR(4000) statement or declaration parameter as the
// sp_prepexec clients of the capture sent them.
func stmt(s string) tds.RPCParam { return nvarchar(8000, collDefault, s) }

// prepExec is sp_prepexec (by id 13): the handle (INT output, 0), the
// declaration (NULL when the statement has no parameters), the statement,
// then the values.
func prepExec(decl *string, sql string, vals ...tds.RPCParam) tds.RPCCall {
	d := nvarcharNull(8000, collDefault)
	if decl != nil {
		d = stmt(*decl)
	}
	return tds.RPCCall{ProcID: tds.ProcPrepExec, ProcName: "sp_prepexec",
		Params: append([]tds.RPCParam{byRef(intN(4, 0)), d, stmt(sql)}, vals...)}
}

// execute is sp_execute (by id 12) of a prepared handle.
func execute(handle int64) tds.RPCCall {
	return tds.RPCCall{ProcID: tds.ProcExecute, ProcName: "sp_execute", Params: []tds.RPCParam{intN(4, handle)}}
}

func ptr(s string) *string { return &s }

// setBatch is the first batch of streams 0 and 4 (the same client library).
const setBatch = " set transaction isolation level  read committed  set implicit_transactions off "

// LongText stands in for the capture's one long free-text value (stream 5,
// an NVARCHAR(MAX) parameter of 4098 UTF-16 code units, 8196 bytes, with
// non-ASCII letters and line breaks): generated text of the same length.
var LongText = func() string {
	const line = "Zażółć gęślą jaźń: \"tdsgate\" long parameter text, 8196 bytes in UTF-16.\n"
	r := []rune(strings.Repeat(line, 4098/len([]rune(line))+1))
	return string(r[:4098])
}()

// Requests are the capture's client requests, in capture order.
var Requests = []Request{
	// Stream 0: a TDS 7.4 client (the real server answered with SPID 53).
	{Stream: 0, Seq: 1, Length: 190, Name: "SET TRANSACTION ISOLATION LEVEL; SET IMPLICIT_TRANSACTIONS", Type: tds.PacketSQLBatch, Status: 0x01, SQL: setBatch},
	{Stream: 0, Seq: 2, Length: 292, Name: "sp_prepexec SELECT with nvarchar(4000) and int parameters", Type: tds.PacketRPC, Status: 0x01,
		Calls: []tds.RPCCall{prepExec(ptr("@P0 nvarchar(4000),@P1 int"),
			"select * from test_table_1 where name = @P0 and id = @P1"+strings.Repeat(" ", 16),
			stmt("zzz"), intN(4, 2))}},

	// Stream 1: a TDS 7.0/7.1 client (SPID 314): a batch without ALL_HEADERS.
	{Stream: 1, Seq: 1, Length: 44, Name: "COMMIT TRANSACTION (TDS 7.1)", Type: tds.PacketSQLBatch, Status: 0x01, SQL: "COMMIT TRANSACTION", NoAllHeaders: true},

	// Stream 2: a procedure by name on a reset connection.
	{Stream: 2, Seq: 1, Length: 185, Name: "p_GetBogusData by name, RESETCONNECTION", Type: tds.PacketRPC, Status: 0x09,
		Calls: []tds.RPCCall{{ProcName: "p_GetBogusData", Params: []tds.RPCParam{
			named("@SearchType", intN(1, 1)),
			named("@MaxWaitTimeInSeconds", intN(4, 0)),
			named("@ProcessNegativeAck", intN(1, 0)),
		}}}},

	// Stream 3: sp_executesql by name, option flags 0x0002, no ALL_HEADERS,
	// on a reset connection.
	{Stream: 3, Seq: 1, Length: 1082, Name: "sp_executesql by name without ALL_HEADERS, tinyint parameter, RESETCONNECTION", Type: tds.PacketRPC, Status: 0x09, NoAllHeaders: true,
		Calls: []tds.RPCCall{{ProcName: "sp_executesql", Options: 0x0002, Params: []tds.RPCParam{
			nvarchar(934, collDefault, "SELECT TOP 88 [dbo].[MyExampleTable].[ID], [dbo].[MyExampleTable].[EntityID], [dbo].[MyExampleTable].[EntityHistoryID], [dbo].[MyExampleTable].[EntityTypeID], [dbo].[MyExampleTable].[EntityVersion], [dbo].[MyExampleTable].[HandlingStatus], [dbo].[MyExampleTable].[OperationTypeID] FROM [dbo].[MyExampleTable]  WHERE ( ( ( [dbo].[MyExampleTable].[HandlingStatus] = @HandlingStatus1))) ORDER BY [dbo].[MyExampleTable].[EntityVersion] ASC,[dbo].[MyExampleTable].[ID] ASC"),
			nvarchar(48, collDefault, "@HandlingStatus1 tinyint"),
			named("@HandlingStatus1", intN(1, 0)),
		}}}},

	// Stream 4: a TDS 7.4 client (SPID 51): create, insert, batched
	// sp_execute, select, drop.
	{Stream: 4, Seq: 1, Length: 190, Name: "SET TRANSACTION ISOLATION LEVEL; SET IMPLICIT_TRANSACTIONS", Type: tds.PacketSQLBatch, Status: 0x01, SQL: setBatch},
	{Stream: 4, Seq: 2, Length: 253, Name: "sp_prepexec CREATE TABLE", Type: tds.PacketRPC, Status: 0x01,
		Calls: []tds.RPCCall{prepExec(nil, "create table newsyb (column1 char(30) not null, column2 char(30) null,column3 char(30) null)")}},
	{Stream: 4, Seq: 3, Length: 233, Name: "sp_prepexec INSERT", Type: tds.PacketRPC, Status: 0x01,
		Calls: []tds.RPCCall{prepExec(nil, "insert INTO newsyb (column1, column2, column3) VALUES ('first', 'second', 'third')")}},
	{Stream: 4, Seq: 4, Length: 61, Name: "two sp_execute in one RPC (0xFF separator)", Type: tds.PacketRPC, Status: 0x01,
		Calls: []tds.RPCCall{execute(2), execute(2)}},
	{Stream: 4, Seq: 5, Length: 109, Name: "sp_prepexec SELECT", Type: tds.PacketRPC, Status: 0x01,
		Calls: []tds.RPCCall{prepExec(nil, "select * from newsyb")}},
	{Stream: 4, Seq: 6, Length: 45, Name: "sp_execute SELECT", Type: tds.PacketRPC, Status: 0x01,
		Calls: []tds.RPCCall{execute(3)}},
	{Stream: 4, Seq: 7, Length: 103, Name: "sp_prepexec DROP TABLE", Type: tds.PacketRPC, Status: 0x01,
		Calls: []tds.RPCCall{prepExec(nil, "drop table newsyb")}},

	// Stream 5: an 8339-byte RPC in two packets of a client with 8000-byte
	// packets, inside a transaction (descriptor as sent).
	{Stream: 5, Seq: 1, Length: 8339, Name: "p_SaveExample: NVARCHAR(MAX) of 8196 bytes, two packets (status 0x04, then 0x01)", Type: tds.PacketRPC, Status: 0x04, PacketSize: 8000,
		Headers: tds.AllHeaders{HasTransaction: true, TransactionDescriptor: 674309865510, OutstandingRequests: 1},
		Calls: []tds.RPCCall{{ProcName: "p_SaveExample", Params: []tds.RPCParam{
			named("@LongParam", nvarchar(tds.MaxLen, collDefault, LongText)),
			named("@Operation", intN(4, 1)),
		}}}},

	// Stream 6: bigint parameters and NULL NVARCHAR(1) parameters.
	{Stream: 6, Seq: 1, Length: 371, Name: "p_SetBogusSample: bigint and NULL nvarchar parameters, RESETCONNECTION", Type: tds.PacketRPC, Status: 0x09,
		Calls: []tds.RPCCall{{ProcName: "p_SetBogusSample", Params: []tds.RPCParam{
			named("@BogusDetailsID", intN(8, 74565)),
			named("@BogusStatusID", intN(8, 5)),
			named("@ResultCode", nvarcharNull(2, collDefault)),
			named("@ResultMsg", nvarcharNull(2, collDefault)),
			named("@ErrorCode", nvarcharNull(2, collDefault)),
			named("@ErrorMsg", nvarcharNull(2, collDefault)),
			named("@ExampleBogusGeneratedID", nvarcharNull(2, collDefault)),
			named("@ExampleType", intN(4, 1)),
		}}}},

	// Stream 7: a procedure without parameters.
	{Stream: 7, Seq: 1, Length: 88, Name: "p_GetMyExampleTableRowCount: no parameters, RESETCONNECTION", Type: tds.PacketRPC, Status: 0x09,
		Calls: []tds.RPCCall{{ProcName: "p_GetMyExampleTableRowCount"}}},

	// Streams 8-10: unnamed parameters without ALL_HEADERS, with NULL-type
	// (0x1F) values, GUIDs, another collation.
	{Stream: 8, Seq: 1, Length: 218, Name: "proc_GetMyExampleTableSampleMetaData: GUID, NULL-type, empty nvarchar, varchar, varbinary, no ALL_HEADERS", Type: tds.PacketRPC, Status: 0x01, NoAllHeaders: true,
		Calls: []tds.RPCCall{{ProcName: "proc_GetMyExampleTableSampleMetaData", Params: []tds.RPCParam{
			guid("00112233-4455-6677-8899-AABBCCDDEEFF"),
			null(),
			nvarchar(0, collClient8, ""),
			varchar(36, collClient8, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij"),
			intN(4, 1),
			intN(8, 45),
			varbinary(12, "0123456789abcdeffedcba98"),
			intN(4, 108),
		}}}},
	{Stream: 9, Seq: 1, Length: 199, Name: "proc_GetMyExampleTableSampleMetaData: two NULL-type values, no ALL_HEADERS, RESETCONNECTION", Type: tds.PacketRPC, Status: 0x09, NoAllHeaders: true,
		Calls: []tds.RPCCall{{ProcName: "proc_GetMyExampleTableSampleMetaData", Params: []tds.RPCParam{
			guid("33221100-5544-7766-8899-AABBCCDDEEFF"),
			null(),
			nvarchar(10, collClient8, "Bogus"),
			null(),
			intN(4, 1),
			intN(8, 45),
			varbinary(28, "0123456789abcdefedcba9876543210123456789abcdefedcba98765"),
			intN(4, 18),
		}}}},
	{Stream: 10, Seq: 1, Length: 268, Name: "proc_FetchMyExampleData: 20 parameters (bit, datetime, NULL int/GUID/bit/nvarchar, output), no ALL_HEADERS, RESETCONNECTION", Type: tds.PacketRPC, Status: 0x09, NoAllHeaders: true,
		Calls: []tds.RPCCall{{ProcName: "proc_FetchMyExampleData", Params: []tds.RPCParam{
			guid("67452301-AB89-EFCD-0123-456789ABCDEF"),
			nvarchar(0, collClient8, ""),
			nvarchar(10, collClient8, "BOGUS"),
			bitN(false),
			datetimeN(time.Date(1899, 12, 30, 0, 0, 0, 0, time.UTC)),
			intN(4, 0),
			intN(4, 0),
			intNull(4),
			guidNull(),
			bitNull(),
			intN(1, 0),
			varbinary(28, "0123456789abcdef0123456789abcdef0123456789abcdef01234567"),
			intNull(4),
			intN(1, 1),
			intN(4, 5242880),
			intN(8, 45),
			intN(1, 1),
			bitN(false),
			nvarcharNull(2, collClient8),
			byRef(intNull(1)),
		}}}},

	// Stream 11: GUID parameters and NULL nvarchar parameters of a third
	// collation.
	{Stream: 11, Seq: 1, Length: 320, Name: "dbo.proc_GetMySampleDataItems: GUID and NULL nvarchar parameters, RESETCONNECTION", Type: tds.PacketRPC, Status: 0x09,
		Calls: []tds.RPCCall{{ProcName: "dbo.proc_GetMySampleDataItems", Params: []tds.RPCParam{
			named("@SampleItemId", guid("4EC31A66-A214-4853-A77E-E7060FFFFF07")),
			named("@DataId", nvarcharNull(2, collClient9)),
			named("@DataItemType", guid("BCB9459B-83A8-4564-B1D3-E9E198478F4E")),
			named("@TableId", nvarcharNull(2, collClient9)),
			named("@MaxFetchSize", intN(4, 100)),
			named("@SomeOtherSampleId", intN(4, 0)),
		}}}},
}
