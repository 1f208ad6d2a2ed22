package main

import (
	"bytes"
	"fmt"
	"testing"

	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// split cuts b into buffers at the given offsets (taken modulo len(b)+1, in
// order), as gRPC hands over a message that came in several frames.
func split(b []byte, at ...int) mem.BufferSlice {
	var s mem.BufferSlice
	prev := 0
	for _, a := range at {
		a %= len(b) + 1
		if a < prev {
			continue
		}
		s = append(s, mem.SliceBuffer(b[prev:a]))
		prev = a
	}
	return append(s, mem.SliceBuffer(b[prev:]))
}

// checkDecodes decodes wire, cut into buffers at the offsets, into m with
// the logs codec, and checks that it got what the proto package gets.
func checkDecodes(t *testing.T, m *tjobv1.LogsResponse, wire []byte, at ...int) {
	t.Helper()
	want := &tjobv1.LogsResponse{}
	wantErr := proto.Unmarshal(wire, want)
	err := newLogsCodec().Unmarshal(split(wire, at...), m)
	switch {
	case (err != nil) != (wantErr != nil):
		t.Fatalf("decoding %s cut at %v: error %v, the proto package's %v", short(wire), at, err, wantErr)
	case err == nil && !proto.Equal(m, want):
		t.Fatalf("decoding %s cut at %v: got %s, the proto package got %s", short(wire), at, short(marshal(t, m)), short(marshal(t, want)))
	}
}

// short shows a message's bytes, or the start and the end of a long one.
func short(b []byte) string {
	if len(b) <= 32 {
		return fmt.Sprintf("%x", b)
	}
	return fmt.Sprintf("%x...%x (%d bytes)", b[:16], b[len(b)-16:], len(b))
}

func marshal(t *testing.T, m *tjobv1.LogsResponse) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLogsCodecDecodesAsProto(t *testing.T) {
	out := bytes.Repeat([]byte("0123456789abcdef"), 3000) // 48,000 bytes: a 3-byte length
	unknown := protowire.AppendString(protowire.AppendTag(nil, 9, protowire.BytesType), "later")
	dataAsVarint := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 5)
	cases := map[string][]byte{
		"empty":                    nil,
		"data":                     marshal(t, &tjobv1.LogsResponse{Data: out}),
		"cut_at":                   marshal(t, &tjobv1.LogsResponse{CutAt: 1 << 40}),
		"negative cut_at":          marshal(t, &tjobv1.LogsResponse{CutAt: -1}),
		"both":                     marshal(t, &tjobv1.LogsResponse{Data: []byte("x"), CutAt: 7}),
		"data twice: the last":     append(marshal(t, &tjobv1.LogsResponse{Data: out}), marshal(t, &tjobv1.LogsResponse{Data: []byte("yz")})...),
		"a field it does not know": append(marshal(t, &tjobv1.LogsResponse{Data: []byte("x")}), unknown...),
		"data with a varint type":  dataAsVarint,
		"truncated data":           marshal(t, &tjobv1.LogsResponse{Data: out})[:1000],
		"truncated length":         {0x0a, 0x80},
		"field 0":                  {0x00, 0x01},
		"varint of 11 bytes":       {0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	}
	for name, wire := range cases {
		t.Run(name, func(t *testing.T) {
			for _, at := range [][]int{nil, {1}, {2}, {3}, {4}, {16 << 10}, {1, 2, 3, 4, 5, 32 << 10}} {
				checkDecodes(t, &tjobv1.LogsResponse{}, wire, at...)
				// Into a message that held another, as copyOutput reuses it.
				checkDecodes(t, &tjobv1.LogsResponse{Data: []byte("left over"), CutAt: 3}, wire, at...)
			}
		})
	}
}

// TestLogsCodecReusesData: the point of the codec is one copy and no
// garbage: a message's output goes into the buffer the last one left.
func TestLogsCodecReusesData(t *testing.T) {
	var m tjobv1.LogsResponse
	c := newLogsCodec()
	if err := c.Unmarshal(split(marshal(t, &tjobv1.LogsResponse{Data: make([]byte, 32<<10)}), 100), &m); err != nil {
		t.Fatal(err)
	}
	first := &m.Data[0]
	if err := c.Unmarshal(split(marshal(t, &tjobv1.LogsResponse{Data: []byte("short"), CutAt: 9})), &m); err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != "short" || m.CutAt != 9 {
		t.Fatalf("got data %q, cut_at %d; want \"short\", 9", m.Data, m.CutAt)
	}
	if &m.Data[0] != first {
		t.Error("the second message's output went into a new buffer, not the first one's")
	}
}

// TestLogsCodecOtherMessages: every message but Logs' goes to the proto codec.
func TestLogsCodecOtherMessages(t *testing.T) {
	want := &tjobv1.LogsRequest{JobId: "1fcc", Follow: true}
	b, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var got tjobv1.LogsRequest
	if err := newLogsCodec().Unmarshal(split(b, 3), &got); err != nil || !proto.Equal(&got, want) {
		t.Fatalf("got %v, %v; want %v", &got, err, want)
	}
}

// FuzzLogsCodec: whatever bytes come, cut into whatever buffers, the codec
// decodes them as the proto package does, into a fresh message or one that
// held another.
//
//	go test -run '^$' -fuzz '^FuzzLogsCodec$' -fuzztime 10s ./tjob
func FuzzLogsCodec(f *testing.F) {
	f.Add([]byte{0x0a, 0x03, 'a', 'b', 'c', 0x10, 0x05}, 2, 5)
	f.Add([]byte{0x0a, 0x80}, 1, 1)
	f.Add([]byte{0x4a, 0x01, 'x', 0x0a, 0x00}, 0, 3)
	f.Fuzz(func(t *testing.T, wire []byte, a, b int) {
		if a < 0 || b < 0 {
			return
		}
		checkDecodes(t, &tjobv1.LogsResponse{}, wire, a, b)
		checkDecodes(t, &tjobv1.LogsResponse{Data: []byte("left over"), CutAt: 3}, wire, a, b)
	})
}
