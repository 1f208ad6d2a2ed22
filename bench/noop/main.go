// Command noop does nothing: the harness times its exec as the cost of a Go
// runtime start with no package initialization to speak of.
package main

func main() {}
