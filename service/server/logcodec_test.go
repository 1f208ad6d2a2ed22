package server

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"google.golang.org/protobuf/proto"
)

// TestLogsCodecWire: a logsChunk goes on the wire as the proto package
// marshals a LogsResponse with the same output, at every length whose
// varint takes another byte, and other messages as the proto codec sends
// them.
func TestLogsCodecWire(t *testing.T) {
	c := newLogsCodec()
	bufs := newChunkBuffers()
	for _, n := range []int{1, 127, 128, 16383, 16384, 100_000, logChunk} {
		buf, err := bufs.next(context.Background(), n <= waitChunk)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			(*buf)[i] = byte(i * 7)
		}
		*buf = (*buf)[:n]
		want, err := proto.Marshal(&tjobv1.LogsResponse{Data: *buf})
		if err != nil {
			t.Fatal(err)
		}
		data, err := c.Marshal(&logsChunk{buf: buf, from: bufs})
		if err != nil {
			t.Fatal(err)
		}
		if got := data.Materialize(); !bytes.Equal(got, want) {
			t.Fatalf("%d bytes of output: codec sent %d bytes, proto.Marshal %d, or they differ", n, len(got), len(want))
		}
		data.Free() // as gRPC does once written: the buffer goes back
	}
	id := "abc"
	other := &tjobv1.LogsRequest{JobId: id, Follow: true}
	want, _ := proto.Marshal(other)
	data, err := c.Marshal(other)
	if err != nil || !bytes.Equal(data.Materialize(), want) {
		t.Fatalf("a LogsRequest: %v, or the bytes differ from proto.Marshal's", err)
	}
}

// TestChunkBuffersInFlight: a stream gets a buffer only once gRPC has given
// back the one it has out, so a stalled stream holds one; a stream whose
// client went stops waiting.
func TestChunkBuffersInFlight(t *testing.T) {
	c := newLogsCodec()
	bufs := newChunkBuffers()
	buf, err := bufs.next(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	data, err := c.Marshal(&logsChunk{buf: buf, from: bufs})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := bufs.next(ctx, true); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a second buffer while the first is out: %v, want it to wait until the deadline", err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := bufs.next(context.Background(), true)
		got <- err
	}()
	data.Free()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("no buffer a minute after gRPC gave the first back")
	}
}
