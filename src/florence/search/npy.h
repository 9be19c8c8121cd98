#pragma once
// NumPy .npy files (format 1.0 / 2.0, numpy/lib/format.py): the embeddings of an index are kept
// in this format so that any tool (numpy.load, autofaiss, clip-retrieval) reads them directly.
//
// Layout: magic "\x93NUMPY", major, minor, header length (u16 LE for 1.0, u32 LE for 2.0), an
// ASCII Python dict {'descr': '<f4', 'fortran_order': False, 'shape': (N, D), } padded with
// spaces and ended by '\n' so that the data starts at a multiple of 64 bytes, then the data in
// C order.
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace florence::search {

/// The header of a .npy file.
struct NpyHeader {
  std::string descr;            ///< '<f4', '<f8', '<f2', ...
  bool fortran_order = false;
  std::vector<int64_t> shape;   ///< () for a scalar
  int64_t data_offset = 0;      ///< byte offset of the first element
  int64_t item_size = 0;        ///< bytes per element (from descr)
};

/// Writes a float32 tensor (1-D or 2-D, any device / dtype convertible to float32) as a .npy
/// file ('<f4', C order), atomically (a temporary file beside it, then rename). Throws
/// florence::Error on another rank or an I/O error (naming the path).
void write_npy(const std::string& path, const torch::Tensor& values);

/// Reads and validates the header. Throws florence::Error naming the file when it is not a
/// .npy file, the version is not 1.x/2.x/3.x, the dict cannot be parsed, the descr is not a
/// little-endian float ('<f2', '<f4', '<f8'), fortran_order is True, or the data is shorter
/// than the shape says.
NpyHeader read_npy_header(const std::string& path);

/// Reads a whole 1-D or 2-D float .npy file as a float32 CPU tensor of its shape. Errors as
/// read_npy_header, plus a rank other than 1 or 2.
torch::Tensor read_npy(const std::string& path);

/// Reads row `row` of a 2-D float32 .npy file whose header is `h` (from read_npy_header) into
/// `out` (shape[1] floats) with one positioned read. Throws florence::Error when `row` is out of
/// range, the file is not 2-D '<f4', or the read fails.
void read_npy_row(const std::string& path, const NpyHeader& h, int64_t row, float* out);

}  // namespace florence::search
