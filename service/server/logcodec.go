package server

import (
	"context"
	"sync"

	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// logsCodec is the proto codec but for the output a Logs stream sends. The
// proto codec marshals each message into a buffer from gRPC's pool, cleared
// first: a copy and a clear of every byte streamed, and, for a message over
// 32 KiB, a 1 MiB buffer. Logs instead sends a logsChunk, output read from
// the spool into a buffer of its own, and this codec hands gRPC that buffer
// as it is, behind the message's few bytes of header; gRPC gives it back
// (chunkBuffers.Put) once it has written it. The bytes on the wire are those
// proto.Marshal gives for a LogsResponse with that Data.
type logsCodec struct{ encoding.CodecV2 }

func newLogsCodec() logsCodec { return logsCodec{encoding.GetCodecV2(protocodec.Name)} }

// codecOption makes a gRPC server send Logs output with logsCodec, which
// Logs needs: it sends logsChunks, which the proto codec refuses.
func codecOption() grpc.ServerOption { return grpc.ForceServerCodecV2(newLogsCodec()) }

// logsChunk is output for one LogsResponse, in buf: the codec hands buf to
// gRPC, which gives it back to from once written.
type logsChunk struct {
	buf  *[]byte
	from *chunkBuffers
}

// logsDataField is LogsResponse's data field, from its descriptor.
var logsDataField = (&tjobv1.LogsResponse{}).ProtoReflect().Descriptor().Fields().ByName("data").Number()

func (c logsCodec) Marshal(v any) (mem.BufferSlice, error) {
	chunk, ok := v.(*logsChunk)
	if !ok {
		return c.CodecV2.Marshal(v)
	}
	hdr := protowire.AppendTag(make([]byte, 0, 16), logsDataField, protowire.BytesType)
	hdr = protowire.AppendVarint(hdr, uint64(len(*chunk.buf)))
	return mem.BufferSlice{mem.SliceBuffer(hdr), mem.NewBuffer(chunk.buf, chunk.from)}, nil
}

// chunkBuffers are one Logs stream's buffers: at most chunksInFlight of
// them out at once. The stream reads output into a buffer only once gRPC
// has written an earlier one to the connection, so a stream whose client
// stops reading holds that many buffers, not one more for each message
// gRPC queues. The buffers themselves come from pools for all streams, and
// are not cleared: the spool's bytes overwrite what a reader gets.
type chunkBuffers struct{ out chan struct{} }

// chunksInFlight is how many of its buffers a Logs stream may have out.
const chunksInFlight = 1

// The two sizes of buffer: logChunk to send output as fast as it is read,
// waitChunk for a follower to wait in for the job's next output, so that
// a thousand idle followers hold 32 MiB, not 256.
const waitChunk = 32 << 10

var (
	largeChunks = sync.Pool{New: func() any { b := make([]byte, logChunk); return &b }}
	smallChunks = sync.Pool{New: func() any { b := make([]byte, waitChunk); return &b }}
)

func newChunkBuffers() *chunkBuffers {
	return &chunkBuffers{out: make(chan struct{}, chunksInFlight)}
}

// next waits until the stream may have one more buffer out, and returns
// one of logChunk bytes or, when small, of waitChunk.
func (c *chunkBuffers) next(ctx context.Context, small bool) (*[]byte, error) {
	select {
	case c.out <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	pool := &largeChunks
	if small {
		pool = &smallChunks
	}
	b := pool.Get().(*[]byte)
	*b = (*b)[:cap(*b)]
	return b, nil
}

// Get is mem.BufferPool's, which gRPC does not call on this pool: it only
// gives buffers back.
func (c *chunkBuffers) Get(length int) *[]byte {
	b := make([]byte, length)
	return &b
}

// Put takes a buffer back, from gRPC once written, or from the stream
// when it read nothing into it.
func (c *chunkBuffers) Put(b *[]byte) {
	switch cap(*b) {
	case logChunk:
		largeChunks.Put(b)
	case waitChunk:
		smallChunks.Put(b)
	}
	select {
	case <-c.out:
	default:
	}
}
