// Package route owns the mapping from a client's login to a bucket: the
// routing [Table] built from the config's rules, the matching of LOGIN7
// fields (server name normalization, case-insensitive '*' globs), and the
// credential rules that tell buckets apart by password.
//
// Rules are tried in order and the first that matches wins; a login no
// rule matches goes to the default bucket, or nowhere (the frontend then
// refuses it with its own TDS error).
//
// A credential rule carries a salted PBKDF2 hash (format and primitives in
// the subpackage passhash, which pkg/config shares without an import
// cycle; [HashPassword] and [VerifyPassword] are the entry points for
// callers such as `proxy hash-password`). Verifying costs milliseconds of
// CPU, so each Table keeps a bounded cache of verdicts, positive and
// negative, keyed by the rule's index and the HMAC-SHA256 of the password
// under a random key drawn when the Table is built: the cache holds no
// password and nothing that could be checked against one outside this
// process, and one HMAC per login serves every credential rule it
// reaches. A reload builds a new Table, so rule indexes and cached
// verdicts never outlive the rules they were computed for.
//
// What a stranger can make the proxy spend is bounded three ways
// ([Options], from the config's credential_routes):
//   - a hash may not use more than MaxHashIterations (New refuses it,
//     naming routes[i].password_hash);
//   - a negative verdict is cached for NegativeCacheTTL, so repeating a
//     wrong password costs one HMAC;
//   - a [FailureLimiter] counts, per source IP, the logins that failed
//     every credential rule they reached by PBKDF2; past MaxFailures in a
//     window, that address's logins that would need another PBKDF2 get
//     [RuleThrottled] (the frontend refuses them with error 50010), while
//     cached verdicts still route, so a returning client whose password is
//     known keeps working.
//
// Nothing in this package logs; [Login] prints with its password redacted.
package route
