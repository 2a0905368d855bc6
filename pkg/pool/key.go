package pool

import (
	"hash/maphash"

	"github.com/tdsgate/tdsgate/pkg/tds"
)

// Key identifies a sub-pool: the connections a client may be handed. Two
// logins with the same Key get backend sessions that differ only in their
// SPID after RESETCONNECTION.
type Key struct {
	User       string
	Database   string // as the client named it ("" = the login's default)
	TDSVersion uint32 // the client's
	PacketSize uint32 // as the client asked
	Encryption string // the bucket's backend encryption
	// App is the application name, which the backend keeps for the
	// session (APP_NAME()) and RESETCONNECTION does not change.
	App string
	// Options hashes the rest of LOGIN7 that shapes the session: option
	// and type flags, language, LCID and the feature extensions (whose
	// acknowledgement is part of the login answer).
	Options uint64
}

var keySeed = maphash.MakeSeed()

// KeyOf returns the Key of a client's login to a bucket whose backend
// encryption is enc.
func KeyOf(l *tds.Login7, enc string) Key {
	var h maphash.Hash
	h.SetSeed(keySeed)
	h.Write([]byte{l.OptionFlags1, l.OptionFlags2, l.TypeFlags, l.OptionFlags3,
		byte(l.ClientLCID), byte(l.ClientLCID >> 8), byte(l.ClientLCID >> 16), byte(l.ClientLCID >> 24)})
	h.WriteString(l.Language)
	h.WriteByte(0)
	h.Write(l.FeatureExt)
	return Key{User: l.UserName, Database: l.Database, TDSVersion: l.TDSVersion, PacketSize: l.PacketSize,
		Encryption: enc, App: l.AppName, Options: h.Sum64()}
}

// Poolable reports whether a login may use or join a pool: not one that
// changes the password (the backend must see it, and the password that
// then works is the new one).
func Poolable(l *tds.Login7) bool { return l.ChangePassword == "" }
