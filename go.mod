module github.com/tdsgate/tdsgate

go 1.26
