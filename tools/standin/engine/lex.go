package engine

import (
	"strings"
)

// tokKind classifies a T-SQL token.
type tokKind uint8

const (
	tkWord   tokKind = iota // keyword or bare identifier (also #temp names)
	tkQIdent                // [quoted] or "quoted" identifier; text is the unquoted name
	tkString                // '...' or N'...'; text is the unescaped value
	tkNumber                // 12, 1.5, 1e3
	tkBinary                // 0xABCD; text is the hex digits
	tkVar                   // @name; text includes the @
	tkSysVar                // @@name; text includes the @@
	tkOp                    // punctuation and operators
)

// token is one lexical element of a T-SQL batch.
type token struct {
	kind tokKind
	text string
	up   string // upper-cased text for tkWord, tkVar and tkSysVar
	line int    // 1-based line of the token's first character
	nstr bool   // N'...' literal
}

func (t token) is(word string) bool { return t.kind == tkWord && t.up == word }
func (t token) isOp(op string) bool { return t.kind == tkOp && t.text == op }

// isIdent reports whether t can name an object or column.
func (t token) isIdent() bool { return t.kind == tkWord || t.kind == tkQIdent }

// render returns the token as SQLite SQL text.
func (t token) render() string {
	switch t.kind {
	case tkQIdent:
		return quoteIdent(t.text)
	case tkString:
		return "'" + strings.ReplaceAll(t.text, "'", "''") + "'"
	case tkBinary:
		return "X'" + t.text + "'"
	case tkWord:
		if strings.HasPrefix(t.text, "#") {
			return quoteIdent(t.text)
		}
		return t.text
	default:
		return t.text
	}
}

// source returns the token roughly as it appeared in T-SQL (for messages).
func (t token) source() string {
	switch t.kind {
	case tkQIdent:
		return t.text
	case tkString:
		return t.text
	case tkBinary:
		return "0x" + t.text
	}
	return t.text
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// lexError is a tokenizer failure (unterminated string, comment or identifier).
type lexError struct {
	line int
	near string
	msg  string
}

func isWordStart(c byte) bool {
	return c == '_' || c == '#' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

func isWordChar(c byte) bool {
	return isWordStart(c) || c >= '0' && c <= '9' || c == '@' || c == '$'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// lex splits a batch into tokens, dropping comments and whitespace.
func lex(src string) ([]token, *lexError) {
	var toks []token
	line := 1
	i := 0
	n := len(src)
	for i < n {
		c := src[i]
		switch {
		case c == '\n':
			line++
			i++
		case c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '-' && i+1 < n && src[i+1] == '-':
			for i < n && src[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < n && src[i+1] == '*':
			start := line
			depth := 0
			for {
				if i >= n {
					return nil, &lexError{line: start, msg: "Missing end comment mark '*/'."}
				}
				if src[i] == '/' && i+1 < n && src[i+1] == '*' {
					depth++
					i += 2
					continue
				}
				if src[i] == '*' && i+1 < n && src[i+1] == '/' {
					depth--
					i += 2
					if depth == 0 {
						break
					}
					continue
				}
				if src[i] == '\n' {
					line++
				}
				i++
			}
		case c == '\'' || (c == 'N' || c == 'n') && i+1 < n && src[i+1] == '\'':
			nstr := c != '\''
			if nstr {
				i++
			}
			start := line
			i++
			var b strings.Builder
			for {
				if i >= n {
					return nil, &lexError{line: start, near: b.String(), msg: "Unclosed quotation mark after the character string '" + b.String() + "'."}
				}
				if src[i] == '\'' {
					if i+1 < n && src[i+1] == '\'' {
						b.WriteByte('\'')
						i += 2
						continue
					}
					i++
					break
				}
				if src[i] == '\n' {
					line++
				}
				b.WriteByte(src[i])
				i++
			}
			toks = append(toks, token{kind: tkString, text: b.String(), line: start, nstr: nstr})
		case c == '[' || c == '"':
			closer := byte(']')
			if c == '"' {
				closer = '"'
			}
			start := line
			i++
			var b strings.Builder
			for {
				if i >= n {
					return nil, &lexError{line: start, near: b.String(), msg: "Unclosed quotation mark after the character string '" + b.String() + "'."}
				}
				if src[i] == closer {
					if i+1 < n && src[i+1] == closer {
						b.WriteByte(closer)
						i += 2
						continue
					}
					i++
					break
				}
				if src[i] == '\n' {
					line++
				}
				b.WriteByte(src[i])
				i++
			}
			toks = append(toks, token{kind: tkQIdent, text: b.String(), line: start})
		case c == '0' && i+1 < n && (src[i+1] == 'x' || src[i+1] == 'X'):
			j := i + 2
			for j < n && strings.IndexByte("0123456789abcdefABCDEF", src[j]) >= 0 {
				j++
			}
			hex := src[i+2 : j]
			if len(hex)%2 == 1 {
				hex = "0" + hex
			}
			toks = append(toks, token{kind: tkBinary, text: hex, line: line})
			i = j
		case isDigit(c) || c == '.' && i+1 < n && isDigit(src[i+1]):
			j := i
			for j < n && isDigit(src[j]) {
				j++
			}
			if j < n && src[j] == '.' {
				j++
				for j < n && isDigit(src[j]) {
					j++
				}
			}
			if j < n && (src[j] == 'e' || src[j] == 'E') {
				k := j + 1
				if k < n && (src[k] == '+' || src[k] == '-') {
					k++
				}
				if k < n && isDigit(src[k]) {
					for k < n && isDigit(src[k]) {
						k++
					}
					j = k
				}
			}
			toks = append(toks, token{kind: tkNumber, text: src[i:j], line: line})
			i = j
		case c == '@':
			j := i + 1
			kind := tkVar
			if j < n && src[j] == '@' {
				kind = tkSysVar
				j++
			}
			for j < n && isWordChar(src[j]) {
				j++
			}
			t := src[i:j]
			toks = append(toks, token{kind: kind, text: t, up: strings.ToUpper(t), line: line})
			i = j
		case isWordStart(c):
			j := i + 1
			for j < n && isWordChar(src[j]) {
				j++
			}
			t := src[i:j]
			toks = append(toks, token{kind: tkWord, text: t, up: strings.ToUpper(t), line: line})
			i = j
		default:
			op := string(c)
			if i+1 < n {
				two := src[i : i+2]
				switch two {
				case "<>", "!=", ">=", "<=", "||", "!<", "!>", "+=", "-=", "*=", "/=", "::":
					op = two
				}
			}
			toks = append(toks, token{kind: tkOp, text: op, line: line})
			i += len(op)
		}
	}
	return toks, nil
}
