// golden-flatten IMAGE [--base BASE]: prints the flattened listing of an image (a docker-archive
// tar or an OCI layout directory) as JSON; with --base, only what differs from BASE, the form of
// tests/golden/fs-cases/*/expected.json. Used by scripts/regen-docker-golden on `docker save`
// output; golden_fs_test lists stagefarm's images with the same code.
#include <cstdio>
#include <iostream>
#include <string>

#include "golden/image_listing.h"

namespace {

// One file entry or one array element per line, so a golden file diffs well in review.
std::string Format(const nlohmann::json& listing) {
  std::string out = "{\n";
  bool first_key = true;
  for (auto it = listing.begin(); it != listing.end(); ++it) {
    out += first_key ? "" : ",\n";
    first_key = false;
    out += "  " + nlohmann::json(it.key()).dump() + ": ";
    if (it.value().is_array() && !it.value().empty()) {
      out += "[\n";
      for (size_t i = 0; i < it.value().size(); ++i) {
        out += "    " + it.value()[i].dump() + (i + 1 < it.value().size() ? ",\n" : "\n");
      }
      out += "  ]";
    } else {
      out += it.value().dump();
    }
  }
  return out + "\n}\n";
}

}  // namespace

int main(int argc, char** argv) {
  std::string image, base;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--base" && i + 1 < argc) {
      base = argv[++i];
    } else if (image.empty() && !arg.starts_with("-")) {
      image = arg;
    } else {
      image.clear();
      break;
    }
  }
  if (image.empty()) {
    std::cerr << "usage: golden-flatten IMAGE [--base BASE_IMAGE]\n";
    return 2;
  }
  auto listing = stagefarm::golden::FlattenImage(image);
  if (!listing.ok()) {
    std::cerr << "golden-flatten: " << listing.status().ToString() << "\n";
    return 1;
  }
  nlohmann::json out = *listing;
  if (!base.empty()) {
    auto base_listing = stagefarm::golden::FlattenImage(base);
    if (!base_listing.ok()) {
      std::cerr << "golden-flatten: " << base_listing.status().ToString() << "\n";
      return 1;
    }
    out = stagefarm::golden::DiffFromBase(*base_listing, out);
  }
  std::cout << Format(out);
  return 0;
}
