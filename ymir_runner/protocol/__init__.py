"""Everything about the files of docs/protocol.md: readers for /in, writers for /out."""
