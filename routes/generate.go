package routes

// docs/config.md, the configuration reference, is generated from the doc
// comments in config.go; TestConfigDocIsUpToDate (internal/docgen) fails
// when it is out of date.
//go:generate go run ../internal/docgen -src config.go -out ../docs/config.md
