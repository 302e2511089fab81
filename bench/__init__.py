"""mediasortd's benchmark harness: `python -m bench` (or `./dev bench`).

It makes its own data, runs the floor (cp -r + sync, sha256sum), our import and daemon,
and the peers (ExifTool, sortphotos, photosort) side by side on the same files, and
prints one table (also written as JSON). See bench/README.md.
"""
