module github.com/neildo/tjob

go 1.26
