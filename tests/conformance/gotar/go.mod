module cfs/conformance/gotar

go 1.19
