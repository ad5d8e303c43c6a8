// A header-only compat build (Paddle 3.2.x / 3.3.x): the library exports no c10 stream functions.
extern "C" int unrelated_function() { return 42; }
