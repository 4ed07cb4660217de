"""Everything about the files of ../shared/protocol.md: readers for /in, writers for /out."""
