#pragma once
// IDX files (the MNIST / Fashion-MNIST container, http://yann.lecun.com/exdb/mnist/):
// big-endian header = 2 zero bytes, a type code (0x08 = unsigned byte, the only type supported
// here), the number of dimensions, then one uint32 size per dimension, then the data in C order.
// Plain or gzip-compressed (zlib auto-detects); Debian `dataset-fashion-mnist` ships
// /usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz.
#include <cstdint>
#include <string>
#include <vector>

namespace florence::data {

/// A uint8 IDX tensor: dims (e.g. {60000, 28, 28}) and row-major data of prod(dims) bytes.
struct IdxArray {
  std::vector<uint32_t> dims;
  std::vector<uint8_t> data;
  size_t count() const { return dims.empty() ? 0 : dims[0]; }
  /// Bytes per item (product of dims[1..]); 1 for a 1-D array.
  size_t item_size() const;
};

/// Reads and validates a uint8 IDX file (gzip or plain). Throws florence::Error naming the file
/// when it cannot be opened, the magic is not 0x0000 0x08 NDIM (1 <= NDIM <= 4), a dimension is 0,
/// the data is shorter than prod(dims), or there are trailing bytes after it.
IdxArray read_idx(const std::string& path);

/// Parses an in-memory (already decompressed) IDX buffer; `what` names it in errors.
IdxArray parse_idx(const std::vector<uint8_t>& bytes, const std::string& what);

/// Fashion-MNIST images + labels of one split.
struct FashionMnist {
  int64_t rows = 28, cols = 28;
  std::vector<uint8_t> images;  ///< [N, rows, cols] uint8 grey, 0 = background (black)
  std::vector<uint8_t> labels;  ///< [N] class ids 0..9
  size_t size() const { return labels.size(); }
};

/// Default install dir of Debian's dataset-fashion-mnist.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

/// Loads split "train" (60k) or "test" (10k, the t10k files) from `dir`. Throws florence::Error
/// when a file is missing/malformed, images are not [N,28,28], labels not [N], counts disagree,
/// or a label is > 9.
FashionMnist load_fashion_mnist(const std::string& dir, const std::string& split);

/// The 10 class names in label order (Fashion-MNIST README, zalandoresearch/fashion-mnist).
const std::vector<std::string>& fashion_mnist_classes();

}  // namespace florence::data
