#!/bin/sh
# Build the SimGrid live-migration driver against Debian's libsimgrid-dev.
#   apt-get install -y libsimgrid-dev g++
set -e
cd "$(dirname "$0")"
mkdir -p build
nice g++ -std=c++17 -O2 -Wall -o build/migrate migrate.cpp -lsimgrid
echo "built $(pwd)/build/migrate"
