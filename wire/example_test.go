package wire_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/natsgate/natsgate/wire"
)

// A request as natsgate sends it for GET /users/7?fields=name on a route
// get-user with path /users/{id}, read with wire.Request, and the headers
// of the answer a worker writes back.
func Example() {
	msg := &nats.Msg{Subject: "users.7.get", Header: nats.Header{
		wire.HeaderMethod:      {"GET"},
		wire.HeaderPath:        {"/users/7"},
		wire.HeaderQuery:       {"fields=name"},
		wire.HeaderRoute:       {"get-user"},
		wire.ParamHeader("id"): {"7"},
		wire.HeaderRequestID:   {"GJwN7jH5z6U4sDlG9LiUEr"},
		"Accept":               {"application/json"},
	}}
	req := wire.MsgRequest(msg)
	fmt.Println(req.Method(), req.Path(), "route", req.Route())
	fmt.Println("id", req.Param("id"), "fields", req.Query().Get("fields"), "shadow", req.Shadow())

	reply := nats.Header{"Content-Type": {"application/json"}}
	wire.SetStatus(reply, 201)
	wire.SetWorkerTime(reply, 1500*time.Microsecond)
	for _, k := range slices.Sorted(maps.Keys(reply)) {
		fmt.Printf("%s: %s\n", k, strings.Join(reply[k], ", "))
	}
	// Output:
	// GET /users/7 route get-user
	// id 7 fields name shadow false
	// Content-Type: application/json
	// Http-Status: 201
	// Server-Timing: worker;dur=1.500
}

// A service error: natsgate answers 404 with a problem body whose detail
// is the description.
func ExampleSetError() {
	h := nats.Header{}
	wire.SetError(h, 404, "no user 7")
	fmt.Println(h.Get(wire.HeaderServiceErrorCode), h.Get(wire.HeaderServiceError))
	// Output: 404 no user 7
}

// A micro endpoint that answers a route's requests through wire: the
// parameter read from the request, the status and the worker's time
// written into the reply. (Not run: it needs a NATS server.)
func ExampleRespond() {
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		panic(err)
	}
	svc, err := micro.AddService(nc, micro.Config{Name: "users", Version: "1.0.0", QueueGroup: "users"})
	if err != nil {
		panic(err)
	}
	_ = svc.AddEndpoint("create-user", micro.HandlerFunc(func(req micro.Request) {
		start := time.Now()
		id := wire.MicroRequest(req).Param("id")
		if id == "0" {
			_ = req.Error("404", "no user 0", nil) // natsgate: 404 with a problem body
			return
		}
		_ = wire.Respond(req, wire.Reply{
			Status: 201,
			Header: nats.Header{"Content-Type": {"application/json"}, "Location": {"/users/" + id}},
			Body:   []byte(`{"id":"` + id + `"}`),
			Start:  start,
		})
	}), micro.WithEndpointSubject("users.*.create"))
}
