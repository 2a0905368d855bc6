package coord

// Redis key layout. The runbook's redis-cli commands
// (sections 11, 13, 14, 19) read and write these keys as written, so the
// names are part of the operator interface: change none of them.
//
//	proxy:bucket:<id>:count        string int: slots taken across all instances
//	proxy:bucket:<id>:max          string int: the bucket's cap; seeded from the
//	                               config only if absent (SET NX); a SET takes
//	                               effect on every instance at once
//	proxy:bucket:<id>:released     pub/sub channel: a slot of <id> came free
//	proxy:bucket:<id>:waiting      hash instance→"<queued> <since ms> <seen ms>":
//	                               instances with clients queued for <id>
//	                               (fairness across instances; acquire script);
//	                               the release script publishes only while it
//	                               has entries
//	proxy:pressure:<id>            pub/sub channel: clients of some instance
//	                               wait for <id> (package pool publishes it; the
//	                               limiter's slot linger listens)
//	proxy:instances                set: live instance ids
//	proxy:instance:<id>:conns      hash bucket→int: slots this instance holds
//	proxy:instance:<id>:heartbeat  string with a TTL: the instance's lease,
//	                               "<incarnation> <time written>"
//	proxy:instance:<id>:incarnation string: the incarnation whose holdings the
//	                               conns hash records
//	proxy:fenced                   set: ids whose lease expired but whose slots
//	                               may still be in use (frozen, or cut off from
//	                               Redis), or that a register found unknown to a
//	                               Redis that had lost its data (absent.go); they
//	                               count in the fallback shares
//	proxy:instance:<id>:fence      hash inc, at (ms), parked (0/1): when and how
//	                               far the reaper fenced the id
//	proxy:route:<key>              string: optional route directory, key → bucket id
//	proxy:peers                    hash id→host:port: where each instance answers
//	                               GET /peer/lease (config redis.peer_address),
//	                               written at each register, dropped when the
//	                               reaper forgets the id
//	proxy:instance:<id>:epoch      string int: the register epoch, raised by each
//	                               register; a release carrying an older one is
//	                               ignored (a stale release delivered late)
//	proxy:admin:commands           pub/sub channel: fleet-wide admin commands
//	                               (pause, resume, drain a bucket on every instance)
//	proxy:admin:ack:<request>      list with a TTL: each instance's JSON answer
//	                               to the fleet command <request>
//
// Invariant kept by the scripts: for every bucket, count equals the sum
// over instances of their conns field for that bucket, and 0 <= count. The
// acquire script alone makes count grow, and only while count < max.
//
// These keys have no hash tags: the layout is the runbook's and assumes one
// Redis (or a primary with replicas), not Redis Cluster.
const (
	// KeyPrefix starts every key tdsgate uses.
	KeyPrefix = "proxy:"
	// KeyInstances is the set of live instance ids.
	KeyInstances = "proxy:instances"
	// KeyFenced is the set of ids whose lease expired while their slots
	// may still be in use (see the reclaim script).
	KeyFenced = "proxy:fenced"
	// KeyPeers is the hash of the instances' /peer/lease addresses.
	KeyPeers = "proxy:peers"
	// KeyReleasedPattern matches every bucket's release channel (PSUBSCRIBE).
	KeyReleasedPattern = "proxy:bucket:*:released"
	// ChanPressurePrefix + bucket id is a bucket's pressure channel (the
	// message is the publisher's id); package pool publishes on it.
	ChanPressurePrefix = "proxy:pressure:"
	// KeyPressurePattern matches every bucket's pressure channel.
	KeyPressurePattern = ChanPressurePrefix + "*"
)

// KeyCount is the key of bucket's global slot count.
func KeyCount(bucket string) string { return "proxy:bucket:" + bucket + ":count" }

// KeyMax is the key of bucket's cap.
func KeyMax(bucket string) string { return "proxy:bucket:" + bucket + ":max" }

// KeyWaiting is the hash of the instances with clients queued for bucket
// (see the acquire script).
func KeyWaiting(bucket string) string { return "proxy:bucket:" + bucket + ":waiting" }

// ChanReleased is the channel the release and reclaim scripts publish a
// bucket's id on when slots of it come free.
func ChanReleased(bucket string) string { return "proxy:bucket:" + bucket + ":released" }

// KeyConns is the hash of the slots instance holds, bucket id → count.
func KeyConns(instance string) string { return "proxy:instance:" + instance + ":conns" }

// KeyHeartbeat is instance's heartbeat key; it lives HeartbeatTTL after the
// last refresh.
func KeyHeartbeat(instance string) string { return "proxy:instance:" + instance + ":heartbeat" }

// KeyIncarnation names the incarnation whose holdings KeyConns records.
func KeyIncarnation(instance string) string { return "proxy:instance:" + instance + ":incarnation" }

// KeyEpoch is instance's register epoch (see the register and release
// scripts).
func KeyEpoch(instance string) string { return "proxy:instance:" + instance + ":epoch" }

// KeyFence is the reaper's record of a fenced instance.
func KeyFence(instance string) string { return "proxy:instance:" + instance + ":fence" }

// ChanAdmin is the channel of fleet-wide admin commands (the admin API's
// ?fleet=1): every instance subscribes and answers on KeyAdminAck.
const ChanAdmin = "proxy:admin:commands"

// KeyAdminAck is the list the instances push their answers to fleet
// command req onto.
func KeyAdminAck(req string) string { return "proxy:admin:ack:" + req }

// KeyRoute is the route directory entry of key.
func KeyRoute(key string) string { return "proxy:route:" + key }

// bucketOfChannel returns the bucket id of a ChanReleased channel name.
func bucketOfChannel(ch string) (string, bool) {
	const pre, suf = "proxy:bucket:", ":released"
	if len(ch) <= len(pre)+len(suf) || ch[:len(pre)] != pre || ch[len(ch)-len(suf):] != suf {
		return "", false
	}
	return ch[len(pre) : len(ch)-len(suf)], true
}

// BucketOfMaxKey returns the bucket id of a KeyMax key name.
func BucketOfMaxKey(k string) (string, bool) {
	const pre, suf = "proxy:bucket:", ":max"
	if len(k) <= len(pre)+len(suf) || k[:len(pre)] != pre || k[len(k)-len(suf):] != suf {
		return "", false
	}
	return k[len(pre) : len(k)-len(suf)], true
}
