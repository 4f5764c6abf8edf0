#pragma once
// libbellows.so exports only the names marked here: the functions the public headers declare
// and the library defines. Everything else in it (the protocol, the reactor, the providers)
// is hidden, so it cannot clash with a program's names or be relied upon. The static library
// is built from the same objects; there the mark changes nothing.

#define BELLOWS_EXPORT __attribute__((visibility("default")))
