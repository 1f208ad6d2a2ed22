package main

import (
	"crypto/sha256"
	"encoding/binary"
	"flag"
	"io"
	"math/rand/v2"
	"os"
	"time"
)

// genBlock is the unit of the generated stream: 1 MiB of fixed pseudo-random
// bytes, with the block's number written at its start and, inverted, at its
// middle, so that a lost, repeated or reordered block changes the hash.
const genBlock = 1 << 20

func genBase() []byte {
	r := rand.New(rand.NewPCG(0x746a6f62, 0x62656e63))
	b := make([]byte, genBlock)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}

// genWrite writes size bytes of the stream to w.
func genWrite(w io.Writer, size int64) error {
	blk := genBase()
	for i := uint64(0); size > 0; i++ {
		binary.LittleEndian.PutUint64(blk[0:], i)
		binary.LittleEndian.PutUint64(blk[genBlock/2:], ^i)
		n := min(size, genBlock)
		if _, err := w.Write(blk[:n]); err != nil {
			return err
		}
		size -= n
	}
	return nil
}

// genSum is the SHA-256 of size bytes of the stream.
func genSum(size int64) [32]byte {
	h := sha256.New()
	genWrite(h, size)
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// genMain: tjobbench gen -size BYTES [-delay D]. Run as a job, it gives the
// followers time to attach, then writes the stream to stdout.
func genMain(args []string) int {
	fs := flag.NewFlagSet("gen", flag.ContinueOnError)
	size := fs.Int64("size", 100<<20, "`bytes` to write")
	delay := fs.Duration("delay", 0, "wait this long first")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	time.Sleep(*delay)
	return exitCode("gen", genWrite(os.Stdout, *size))
}
