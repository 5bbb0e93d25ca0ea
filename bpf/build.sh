#!/bin/sh
# Builds the eBPF objects from bpf/*.bpf.c into OUTDIR (default: bpf/, where the committed,
# prebuilt objects live). `make bpf` runs it; bpf/objects.test.ts runs it into a temporary
# directory and fails when the result differs from the committed objects.
#
# Reproducible: source paths are mapped to "." (-ffile-prefix-map) and the DWARF is stripped
# (llvm-strip -g keeps .BTF and .BTF.ext, which libbpf needs for CO-RE and the verifier's line
# info). What remains is a function of the sources, vmlinux.h and the clang version (Debian 12:
# clang 14), so the committed objects compare byte for byte with a fresh build.
set -eu
src=$(cd "$(dirname "$0")" && pwd)
out=${1:-$src}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$src"
for prog in redirect origdst; do
  clang -O2 -g -target bpf -Wall -Werror -I. -ffile-prefix-map="$src"=. \
    -c "$prog.bpf.c" -o "$out/$prog.bpf.o.tmp"
  llvm-strip -g "$out/$prog.bpf.o.tmp"
  mv "$out/$prog.bpf.o.tmp" "$out/$prog.bpf.o"
done
