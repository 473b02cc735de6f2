package routes_test

import (
	"errors"
	"fmt"
	"os"

	"github.com/natsgate/natsgate/routes"
)

func ExampleLoad() {
	config := []byte(`
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats:
      subject: users.{id}.get
      timeout: 2s
`)
	table, err := routes.Load("natsgate.yaml", config, os.LookupEnv)
	if err != nil {
		fmt.Println(err)
		return
	}
	r := table.Route("get-user")
	fmt.Println(r.Method, r.Path, "->", r.Subject, r.Pattern, r.Timeout)
	// Output: GET /users/{id} -> users.{id}.get request 2s
}

func ExampleLoad_errors() {
	config := []byte(`
routes:
  - name: get-user
    path: /users/{id}
    nats:
      subject: users.{user}.get
      timeout: soon
`)
	_, err := routes.Load("natsgate.yaml", config, os.LookupEnv)
	fmt.Println(errors.Is(err, routes.ErrInvalidConfig))
	fmt.Println(err)
	// Output:
	// true
	// natsgate.yaml:6: route "get-user": nats.subject: uses {user} but the path "/users/{id}" has no such parameter
	// natsgate.yaml:7: route "get-user": nats.timeout: "soon" is not a duration (write it like 250ms, 5s or 1m)
}

func ExampleSubject_Render() {
	subject, _ := routes.ParseSubject("users.{id}.get")
	s, err := subject.Render([]string{"id"}, []string{"42"}, 256)
	fmt.Println(s, err)
	_, err = subject.Render([]string{"id"}, []string{"*"}, 256)
	fmt.Println(errors.Is(err, routes.ErrBadParam))
	// Output:
	// users.42.get <nil>
	// true
}
