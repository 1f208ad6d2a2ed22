package server

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// FuzzLookup: whatever job ID a client sends, lookup answers one of the
// caller's own jobs (the one the ID names exactly, or the only one it is a
// prefix of, in any case), or NotFound when none of the caller's jobs
// matches, or InvalidArgument when it is empty or matches several. It never
// answers another user's job, and its error is one short line.
//
//	go test -run '^$' -fuzz '^FuzzLookup$' -fuzztime 10s ./server
func FuzzLookup(f *testing.F) {
	// Alice's and Bob's IDs share prefixes of many lengths.
	jobs := map[string][]string{
		"alice": {
			"0badf00d-0000-4000-8000-000000000000",
			"0badf00d-0000-4000-8000-000000000001",
			"1fbb6e8a-788c-45bf-9996-1b45bb6a99d0",
			"abcdef01-2345-4678-9abc-def012345678",
		},
		"bob": {
			"0badf00d-0000-4000-8000-000000000002",
			"1fbb6e8a-788c-45bf-9996-1b45bb6a99d1",
			"abcdef01-2345-4678-9abc-def012345679",
			"ffffffff-ffff-4fff-bfff-ffffffffffff",
		},
	}
	s := &Server{jobs: map[string]*entry{}}
	for user, ids := range jobs {
		for _, id := range ids {
			s.jobs[id] = &entry{id: id, rec: &record{ID: id, Owner: user, State: stateExited}}
		}
	}
	for _, seed := range []string{
		"", "0", "0badf00d", "0BADF00D-0000-4000-8000-000000000001", "0badf00d-0000-4000-8000-000000000002",
		"1fbb6e8a-788c-45bf-9996-1b45bb6a99d", "abcdef01-2345-4678-9abc-def012345679", "f", "ffffffff",
		"../etc/passwd", "\x00", "\xff\xfe", "é", strings.Repeat("0", 100), "0badf00d-0000-4000-8000-0000000000000",
	} {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	f.Fuzz(func(t *testing.T, id string, asBob bool) {
		user := "alice"
		if asBob {
			user = "bob"
		}
		ctx := context.WithValue(context.Background(), callKey{}, &call{user: user})
		e, err := s.lookup(ctx, id)

		lower := strings.ToLower(id)
		var mine []string
		exact := false
		for _, jid := range jobs[user] {
			if jid == lower {
				exact = true
			}
			if strings.HasPrefix(jid, lower) {
				mine = append(mine, jid)
			}
		}
		switch {
		case err == nil:
			if e.rec.Owner != user {
				t.Fatalf("%s asked for %q and got %s's job %s", user, id, e.rec.Owner, e.rec.ID)
			}
			if !strings.HasPrefix(e.rec.ID, lower) || id == "" {
				t.Fatalf("%q resolved to %s", id, e.rec.ID)
			}
			if !exact && len(mine) != 1 {
				t.Fatalf("%q resolved to %s, though it matches %q", id, e.rec.ID, mine)
			}
		case id == "":
			wantStatus(t, id, err, codes.InvalidArgument)
		case exact:
			t.Fatalf("%q names %s's job exactly, yet: %v", id, user, err)
		case len(mine) == 0:
			wantStatus(t, id, err, codes.NotFound)
		default:
			wantStatus(t, id, err, codes.InvalidArgument)
			for _, m := range mine {
				if !strings.Contains(err.Error(), m) {
					t.Fatalf("ambiguous %q: %v does not list %s", id, err, m)
				}
			}
		}
		if err != nil {
			msg := status.Convert(err).Message()
			// What the error says besides the caller's own ID.
			rest := strings.Replace(msg, showID(lower), "", 1)
			for _, other := range jobs[map[string]string{"alice": "bob", "bob": "alice"}[user]] {
				if strings.Contains(rest, other) {
					t.Fatalf("%s's error names another user's job: %q", user, msg)
				}
			}
			if !utf8.ValidString(msg) || strings.ContainsAny(msg, "\n\r\x00") || len(msg) > 512 {
				t.Fatalf("error for %q is not one short line: %q", id, msg)
			}
		}
	})
}

func wantStatus(t *testing.T, id string, err error, code codes.Code) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Fatalf("%q: %v, want %v", id, err, code)
	}
}
