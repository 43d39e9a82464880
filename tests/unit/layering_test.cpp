// Layering rule of the library (DESIGN.md §2): the primitives under parallel/
// and the optimizer layer under optim/ never include a model/ or train/ header,
// so any model can use them. Scans the sources; the scanner itself is checked
// on a synthetic file so this test can fail.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

// The #include lines of `text` that name a model/ or train/ header.
std::vector<std::string> forbidden_includes(const std::string& text) {
  static const std::regex re(R"re(^\s*#\s*include\s*[<"](pp3d/)?(model|train)/[^">]*[">])re");
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (std::regex_search(line, re)) out.push_back(line);
  return out;
}

std::string read_all(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("layering scanner finds model/ and train/ includes") {
  CHECK(forbidden_includes("#include \"pp3d/model/gpt.h\"\n").size() == 1);
  CHECK(forbidden_includes("  #include <pp3d/train/optimizer.h>\n").size() == 1);
  CHECK(forbidden_includes("#include \"model/gpt_internal.h\"\n").size() == 1);
  CHECK(forbidden_includes("#include \"pp3d/parallel/module.h\"\n#include \"pp3d/optim/optimizer.h\"\n").empty());
}

TEST_CASE("parallel/ and optim/ include nothing from model/ or train/") {
  const fs::path root = PP3D_SOURCE_DIR;
  int scanned = 0;
  for (const char* dir : {"include/pp3d/parallel", "lib/parallel", "include/pp3d/optim", "lib/optim"}) {
    REQUIRE(fs::is_directory(root / dir));
    for (const auto& e : fs::recursive_directory_iterator(root / dir)) {
      if (!e.is_regular_file()) continue;
      const std::string ext = e.path().extension().string();
      if (ext != ".h" && ext != ".cpp" && ext != ".cuh" && ext != ".cu") continue;
      ++scanned;
      for (const std::string& line : forbidden_includes(read_all(e.path())))
        FAIL_CHECK(e.path().string() << " includes a model/ or train/ header: " << line);
    }
  }
  CHECK(scanned >= 10);
}

namespace {

// The quoted #include lines of `text` that a third-party client could not
// write: anything but a public "pp3d/..." header (GPT's excluded) and the
// client's own "model/llama_*" files.
std::vector<std::string> non_public_includes(const std::string& text) {
  static const std::regex quoted(R"re(^\s*#\s*include\s*"([^"]*)")re");
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (!std::regex_search(line, m, quoted)) continue;
    const std::string path = m[1];
    const bool public_hdr = path.rfind("pp3d/", 0) == 0 && path.rfind("pp3d/model/gpt", 0) != 0 &&
                            path.rfind("pp3d/train/", 0) != 0;
    if (!public_hdr && path.rfind("model/llama_", 0) != 0) out.push_back(line);
  }
  return out;
}

}  // namespace

TEST_CASE("the Llama model is a client of the public headers only (issue 16)") {
  CHECK(non_public_includes("#include \"backend/cpu/cpu_backend.h\"\n").size() == 1);
  CHECK(non_public_includes("#include \"model/gpt_internal.h\"\n").size() == 1);
  CHECK(non_public_includes("#include \"pp3d/model/gpt.h\"\n").size() == 1);
  CHECK(non_public_includes("#include \"pp3d/parallel/module.h\"\n#include <vector>\n").empty());
  const fs::path root = PP3D_SOURCE_DIR;
  int scanned = 0;
  for (const char* dir : {"include/pp3d/model", "lib/model"}) {  // llama.h, llama_generate.h, llama*.cpp, ...
    for (const auto& e : fs::directory_iterator(root / dir)) {
      if (e.path().filename().string().rfind("llama", 0) != 0) continue;
      ++scanned;
      for (const std::string& line : non_public_includes(read_all(e.path())))
        FAIL_CHECK(e.path().string() << " includes a non-public header: " << line);
    }
  }
  CHECK(scanned >= 6);
}
