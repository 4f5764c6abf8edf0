#pragma once
// Whether this build runs under AddressSanitizer or ThreadSanitizer, for the few checks whose
// subject the sanitizers' own runtime changes (resident memory, the descriptor table).

namespace bellows::test {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool sanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool sanitized = true;
#else
inline constexpr bool sanitized = false;
#endif
#else
inline constexpr bool sanitized = false;
#endif

}  // namespace bellows::test
