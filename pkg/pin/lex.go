package pin

// The lexer streams tokens from T-SQL text. It never allocates per token:
// a token is a kind plus offsets into the source.

type kind uint8

const (
	tEOF    kind = iota
	tErr         // unterminated string, quoted identifier or block comment
	tWord        // unquoted identifier or keyword, including @var, @@fn, #tmp
	tQuoted      // "quoted" or [bracketed] identifier
	tString      // 'string' or N'string'
	tNumber      // 123, 1.5, 0x1F, 1e5
	tPunct       // any other single byte
)

type token struct {
	kind       kind
	start, end int // raw source text is src[start:end]
	depth      int // parenthesis depth at the token (a '(' has the outer depth)
}

type lexer struct {
	src   string
	pos   int
	depth int
	done  bool
}

func isWordStart(c byte) bool {
	return c == '_' || c == '@' || c == '#' || c >= 0x80 ||
		(c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isWordByte(c byte) bool {
	return isWordStart(c) || c == '$' || (c >= '0' && c <= '9')
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' || c == 0
}

// next returns the next token. After tEOF or tErr it keeps returning tEOF.
func (l *lexer) next() token {
	if l.done {
		return token{kind: tEOF, start: len(l.src), end: len(l.src)}
	}
	s := l.src
	for l.pos < len(s) {
		c := s[l.pos]
		switch {
		case isSpace(c):
			l.pos++
		case c == '-' && l.pos+1 < len(s) && s[l.pos+1] == '-':
			for l.pos < len(s) && s[l.pos] != '\n' {
				l.pos++
			}
		case c == '/' && l.pos+1 < len(s) && s[l.pos+1] == '*':
			if !l.skipBlockComment() {
				return l.fail()
			}
		default:
			return l.scanToken()
		}
	}
	l.done = true
	return token{kind: tEOF, start: len(s), end: len(s)}
}

func (l *lexer) fail() token {
	l.done = true
	return token{kind: tErr, start: l.pos, end: len(l.src)}
}

// skipBlockComment skips a /* */ comment, which T-SQL nests.
func (l *lexer) skipBlockComment() bool {
	s := l.src
	nest := 0
	for l.pos+1 < len(s) {
		switch {
		case s[l.pos] == '/' && s[l.pos+1] == '*':
			nest++
			l.pos += 2
		case s[l.pos] == '*' && s[l.pos+1] == '/':
			nest--
			l.pos += 2
			if nest == 0 {
				return true
			}
		default:
			l.pos++
		}
	}
	l.pos = len(s)
	return false
}

// scanQuoted scans from the opening delimiter at l.pos to the closing one;
// a doubled closing delimiter is an escape.
func (l *lexer) scanQuoted(close byte) bool {
	s := l.src
	l.pos++
	for l.pos < len(s) {
		if s[l.pos] == close {
			if l.pos+1 < len(s) && s[l.pos+1] == close {
				l.pos += 2
				continue
			}
			l.pos++
			return true
		}
		l.pos++
	}
	return false
}

func (l *lexer) scanToken() token {
	s := l.src
	start := l.pos
	c := s[l.pos]
	tok := token{start: start, depth: l.depth}
	switch {
	case c == '\'' || ((c == 'N' || c == 'n') && l.pos+1 < len(s) && s[l.pos+1] == '\''):
		if c != '\'' {
			l.pos++ // the N of N'...'
		}
		if !l.scanQuoted('\'') {
			return l.fail()
		}
		tok.kind = tString
	case c == '"' || c == '[':
		close := byte('"')
		if c == '[' {
			close = ']'
		}
		if !l.scanQuoted(close) {
			return l.fail()
		}
		tok.kind = tQuoted
	case isWordStart(c):
		for l.pos < len(s) && isWordByte(s[l.pos]) {
			l.pos++
		}
		tok.kind = tWord
	case c >= '0' && c <= '9', c == '.' && l.pos+1 < len(s) && s[l.pos+1] >= '0' && s[l.pos+1] <= '9':
		l.pos++
		for l.pos < len(s) && (isWordByte(s[l.pos]) || s[l.pos] == '.') && s[l.pos] != '@' && s[l.pos] != '#' {
			l.pos++
		}
		tok.kind = tNumber
	default:
		l.pos++
		tok.kind = tPunct
		switch c {
		case '(':
			l.depth++
		case ')':
			if l.depth > 0 {
				l.depth--
			}
			tok.depth = l.depth
		}
	}
	tok.end = l.pos
	return tok
}

// text is the raw source of t.
func (l *lexer) text(t token) string { return l.src[t.start:t.end] }

// name is the identifier t names: a word as written, a quoted or bracketed
// identifier without its delimiters and escapes.
func name(src string, t token) string {
	raw := src[t.start:t.end]
	if t.kind != tQuoted || len(raw) < 2 {
		return raw
	}
	close := raw[len(raw)-1]
	inner := raw[1 : len(raw)-1]
	return unescape(inner, close)
}

// stringValue is the content of a string literal token, unescaped.
func stringValue(src string, t token) string {
	raw := src[t.start:t.end]
	if len(raw) > 0 && (raw[0] == 'N' || raw[0] == 'n') {
		raw = raw[1:]
	}
	if len(raw) < 2 {
		return ""
	}
	return unescape(raw[1:len(raw)-1], '\'')
}

func unescape(s string, q byte) string {
	i := 0
	for i < len(s) && !(s[i] == q && i+1 < len(s) && s[i+1] == q) {
		i++
	}
	if i == len(s) {
		return s
	}
	b := make([]byte, 0, len(s))
	for j := 0; j < len(s); j++ {
		b = append(b, s[j])
		if s[j] == q && j+1 < len(s) && s[j+1] == q {
			j++
		}
	}
	return string(b)
}
