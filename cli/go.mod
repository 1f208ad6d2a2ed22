module github.com/neildo/tjob/cli

go 1.26.0

require (
	github.com/docker/go-units v0.5.0
	github.com/neildo/tjob v0.0.0-00010101000000-000000000000
	github.com/neildo/tjob/service v0.0.0
	golang.org/x/sys v0.50.0
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)

require (
	golang.org/x/net v0.63.0 // indirect
	golang.org/x/text v0.44.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
)

replace (
	github.com/neildo/tjob => ../
	github.com/neildo/tjob/service => ../service
)
