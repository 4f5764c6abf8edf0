// Runs a fuzz harness over files, for builds without libFuzzer: ctest replays the committed
// corpus and every regression input through each harness on every build, sanitizers included.
// Usage: replay CORPUS_DIR [DIR_OR_FILE...]; fails when an input makes the harness throw, or when
// the corpus (the first argument) holds no input; later directories may be empty or absent.
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

bool replay(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  try {
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    return true;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", file.c_str(), e.what());
    return false;
  }
}

}  // namespace

int main(int argc, char** argv) {
  int failed = 0;
  int ran = 0;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path path(argv[i]);
    if (std::filesystem::is_directory(path)) {
      int here = 0;
      for (const auto& entry : std::filesystem::directory_iterator(path)) {
        if (!entry.is_regular_file() || entry.path().filename().string().starts_with(".")) continue;
        ++here;
        failed += replay(entry.path()) ? 0 : 1;
      }
      if (here == 0 && i == 1) {
        std::fprintf(stderr, "%s: no inputs\n", path.c_str());
        ++failed;
      }
      ran += here;
    } else if (std::filesystem::is_regular_file(path)) {
      ++ran;
      failed += replay(path) ? 0 : 1;
    } else if (i == 1) {
      std::fprintf(stderr, "%s: no such corpus\n", path.c_str());
      ++failed;
    }
  }
  std::printf("%d inputs replayed, %d failed\n", ran, failed);
  return failed == 0 ? 0 : 1;
}
