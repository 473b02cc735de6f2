package importer

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/pb33f/libopenapi"
	"github.com/pb33f/libopenapi/datamodel"
	v2 "github.com/pb33f/libopenapi/datamodel/high/v2"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"
	"github.com/pb33f/libopenapi/index"
	"github.com/pb33f/libopenapi/orderedmap"
)

// ErrUnreadableSpec is wrapped by every error about a spec the importer
// cannot read, so callers can tell a bad spec from other failures.
var ErrUnreadableSpec = errors.New("unreadable API description")

// MaxSpecBytes bounds a description's size. The reader holds about 140
// bytes of memory per byte of a file of small nodes, so a 50 MB file took
// 6.6 GB and most of a minute; the largest public descriptions (GitHub's
// REST API, about 11 MB) fit well under it.
const MaxSpecBytes = 32 << 20

// SpecError is a spec the importer cannot read: the file, the line when
// the reader gives one, and what is wrong.
type SpecError struct {
	File string
	Line int // 1-based; 0 when the reader gives none
	Msg  string
}

func (e *SpecError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Unwrap lets errors.Is(err, ErrUnreadableSpec) hold for every SpecError.
func (e *SpecError) Unwrap() error { return ErrUnreadableSpec }

// apiSpec is what the importer takes from a description, whatever its
// version: where the API is served and its operations in file order.
type apiSpec struct {
	title, version string // info.title and info.version
	format         string // "Swagger 2.0", "OpenAPI 3.0.3", ...
	serverURL      string // scheme://host of the first server, "" if none usable
	basePath       string // the first server's path ("/v1"), or "" for none
	ops            []specOp
}

// specOp is one operation: an HTTP method on a path.
type specOp struct {
	method      string // upper case
	path        string // the path as the spec writes it
	operationID string
	summary     string
}

// readSpec reads OpenAPI 3.0 and 3.1 and Swagger 2.0, in YAML or JSON,
// with libopenapi: it resolves $refs within the file and keeps the file's
// order of paths and of operations within a path. It reads no other file
// and no URL: a $ref to one is an error.
func readSpec(data []byte, file string) (*apiSpec, error) {
	if len(data) > MaxSpecBytes {
		return nil, &SpecError{File: file, Msg: fmt.Sprintf("%d bytes, more than the %d MiB the importer reads", len(data), MaxSpecBytes>>20)}
	}
	cfg := datamodel.NewDocumentConfiguration()
	// The reader's own log would repeat on stderr what the error says.
	cfg.Logger = slog.New(slog.DiscardHandler)
	doc, err := libopenapi.NewDocumentWithConfiguration(data, cfg)
	if err != nil {
		if strings.Contains(err.Error(), "spec type not supported") {
			return nil, &SpecError{File: file, Msg: "neither OpenAPI 3 nor Swagger 2.0 (no openapi or swagger field)"}
		}
		return nil, specError(file, err)
	}
	info := doc.GetSpecInfo()
	switch info.SpecFormat {
	case datamodel.OAS2:
		return readV2(doc, file)
	case datamodel.OAS3, datamodel.OAS31, datamodel.OAS32:
		return readV3(doc, file)
	}
	return nil, &SpecError{File: file, Msg: "neither OpenAPI 3 nor Swagger 2.0 (no openapi or swagger field)"}
}

func readV3(doc libopenapi.Document, file string) (*apiSpec, error) {
	m, err := doc.BuildV3Model()
	if err = modelError(file, err); m == nil || err != nil {
		if err == nil {
			err = &SpecError{File: file, Msg: "cannot build the OpenAPI model"}
		}
		return nil, err
	}
	d := m.Model
	s := &apiSpec{format: "OpenAPI " + d.Version}
	if d.Info != nil {
		s.title, s.version = d.Info.Title, d.Info.Version
	}
	if len(d.Servers) > 0 && d.Servers[0] != nil {
		srv := d.Servers[0]
		raw := srv.URL
		for name, v := range srv.Variables.FromOldest() {
			if v != nil {
				raw = strings.ReplaceAll(raw, "{"+name+"}", v.Default)
			}
		}
		s.serverURL, s.basePath = splitServer(raw)
	}
	if d.Paths != nil {
		s.ops = pathOps(d.Paths.PathItems, func(op *v3.Operation) (string, string) { return op.OperationId, op.Summary })
	}
	return s, nil
}

func readV2(doc libopenapi.Document, file string) (*apiSpec, error) {
	m, err := doc.BuildV2Model()
	if err = modelError(file, err); m == nil || err != nil {
		if err == nil {
			err = &SpecError{File: file, Msg: "cannot build the Swagger model"}
		}
		return nil, err
	}
	d := m.Model
	s := &apiSpec{format: "Swagger " + d.Swagger}
	if d.Info != nil {
		s.title, s.version = d.Info.Title, d.Info.Version
	}
	s.basePath = cleanBase(d.BasePath)
	if d.Host != "" {
		scheme := "https"
		if len(d.Schemes) > 0 && (d.Schemes[0] == "http" || d.Schemes[0] == "https") {
			scheme = d.Schemes[0]
		}
		s.serverURL, _ = splitServer(scheme + "://" + d.Host)
	}
	if d.Paths != nil {
		s.ops = pathOps(d.Paths.PathItems, func(op *v2.Operation) (string, string) { return op.OperationId, op.Summary })
	}
	return s, nil
}

// pathItem is a path item of either model version: its operations by
// method, in the file's order.
type pathItem[O comparable] interface {
	comparable
	GetOperations() *orderedmap.Map[string, O]
}

// pathOps lists the operations of every path, in the file's order, for
// either model version; meta reads an operation's id and summary. A path
// or operation the model left nil (an empty entry in the file) adds
// nothing, or an operation with neither.
func pathOps[P pathItem[O], O comparable](items *orderedmap.Map[string, P], meta func(O) (id, summary string)) []specOp {
	var ops []specOp
	var noItem P
	var noOp O
	for path, item := range items.FromOldest() {
		if item == noItem {
			continue
		}
		for method, op := range item.GetOperations().FromOldest() {
			o := specOp{method: strings.ToUpper(method), path: path}
			if op != noOp {
				o.operationID, o.summary = meta(op)
			}
			ops = append(ops, o)
		}
	}
	return ops
}

// splitServer cuts a server URL into the upstream (scheme://host, when
// the URL is absolute http or https) and the base path that prefixes
// every path of the API.
func splitServer(raw string) (upstream, base string) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", ""
	}
	if (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && !strings.ContainsAny(u.Host, "{}") {
		upstream = u.Scheme + "://" + u.Host
	}
	return upstream, cleanBase(u.Path)
}

// cleanBase makes a base path "" or "/a/b": no trailing slash, and none
// with characters a chi pattern would read as syntax.
func cleanBase(p string) string {
	p = strings.TrimRight(p, "/")
	if p == "" || strings.ContainsAny(p, "{}*") || strings.Contains(p, "${") {
		return ""
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return p
}

// modelError keeps the errors that stop the import. A circular $ref
// among schemas does not: the importer reads paths and operations only.
func modelError(file string, err error) error {
	if err == nil {
		return nil
	}
	var kept []error
	for _, e := range flatten(err) {
		var re *index.ResolvingError
		if errors.As(e, &re) && re.CircularReference != nil {
			continue
		}
		kept = append(kept, e)
	}
	if len(kept) == 0 {
		return nil
	}
	return specError(file, kept[0])
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// lineInMsg finds the line in the YAML reader's messages ("at L5.C1")
// and in others ("at line 5").
var lineInMsg = regexp.MustCompile(`\bL(\d+)\.C\d+|(?i:\bline (\d+))`)

// specError names the file and, where the reader gives it, the line.
func specError(file string, err error) error {
	se := &SpecError{File: file, Msg: err.Error()}
	var re *index.ResolvingError
	var ie *index.IndexingError
	switch {
	case errors.As(err, &ie) && ie.Node != nil:
		se.Line = ie.Node.Line
	case errors.As(err, &re) && re.Node != nil:
		se.Line = re.Node.Line
	default:
		if m := lineInMsg.FindStringSubmatch(se.Msg); m != nil {
			se.Line, _ = strconv.Atoi(m[1] + m[2])
		}
	}
	return se
}
