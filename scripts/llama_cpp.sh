#!/bin/sh
# llama.cpp's GGUF tools from the llama-cpp-python source distribution on PyPI (no git, no
# hub): `scripts/llama_cpp.sh VENV` unpacks the converter (convert_hf_to_gguf.py, its
# conversion/ package and gguf-py) into VENV/share/llama.cpp; `scripts/llama_cpp.sh VENV
# build` also compiles llama-quantize there (CPU only, a few minutes on 2 cores).
set -e
VENV=$1
VERSION=0.3.36
DEST=$VENV/share/llama.cpp
if [ -f "$DEST/convert_hf_to_gguf.py" ] && { [ "$2" != build ] || [ -x "$DEST/bin/llama-quantize" ]; }; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$VENV/bin/pip" download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$tmp"
tar xzf "$tmp/llama_cpp_python-$VERSION.tar.gz" -C "$tmp" "llama_cpp_python-$VERSION/vendor/llama.cpp"
src=$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp
mkdir -p "$DEST"
cp -r "$src/convert_hf_to_gguf.py" "$src/conversion" "$src/gguf-py" "$src/LICENSE" "$DEST/"
if [ "$2" = build ]; then
  cmake -S "$src" -B "$tmp/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
  cmake --build "$tmp/build" --target llama-quantize -j "$(nproc)" >/dev/null
  mkdir -p "$DEST/bin"
  cp "$tmp/build/bin/llama-quantize" "$DEST/bin/"
fi
