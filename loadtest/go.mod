module github.com/m-lab/epoxy-extensions/loadtest

go 1.26.0

require github.com/m-lab/epoxy-extensions v0.0.0-00010101000000-000000000000

require github.com/m-lab/go v0.1.77 // indirect

replace github.com/m-lab/epoxy-extensions => ../
