package main

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"flag"
	"fmt"
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
	if err := genWrite(os.Stdout, *size); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		return 1
	}
	return 0
}

// tlscatMain: tjobbench tlscat -addr A -ca F -cert F -key F. The anchor of
// the streaming benchmark: a plain TLS 1.3 client that copies what the server
// sends to stdout, with the same certificates as tjob.
func tlscatMain(args []string) int {
	fs := flag.NewFlagSet("tlscat", flag.ContinueOnError)
	addr := fs.String("addr", "", "server `host:port`")
	ca := fs.String("ca", "", "CA `file`")
	cert := fs.String("cert", "", "client certificate `file`")
	key := fs.String("key", "", "client key `file`")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	err := func() error {
		cfg, err := clientTLSConfig(*ca, *cert, *key)
		if err != nil {
			return err
		}
		conn, err := tls.Dial("tcp", *addr, cfg)
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = io.Copy(os.Stdout, conn)
		return err
	}()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tlscat:", err)
		return 1
	}
	return 0
}
