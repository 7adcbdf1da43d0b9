#!/bin/sh
# Build the SimGrid live-migration drivers against Debian's libsimgrid-dev.
#   apt-get install -y libsimgrid-dev g++
set -e
cd "$(dirname "$0")"
mkdir -p build
nice g++ -std=c++17 -O2 -Wall -o build/migrate migrate.cpp -lsimgrid
nice g++ -std=c++17 -O2 -Wall -o build/migrate_many migrate_many.cpp -lsimgrid
echo "built $(pwd)/build/migrate $(pwd)/build/migrate_many"
