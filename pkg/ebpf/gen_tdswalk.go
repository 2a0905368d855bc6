package ebpf

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall" -target bpfel -type tdswalk tdswalk ../../bpf/tdswalk.c -- -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu
