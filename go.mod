module github.com/natsgate/natsgate

go 1.26.8

require (
	github.com/go-chi/chi/v5 v5.5.0
	go.yaml.in/yaml/v3 v3.0.6
)
