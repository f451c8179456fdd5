// PNG and JPEG files read as smat-deploy (Pillow) reads them, and the alpha written as an 8-bit PNG.
//
// libpng and libjpeg(-turbo) decode; libexif reads the EXIF orientation from a JPEG's APP1 segment or a
// PNG's eXIf chunk (Pillow reads both), and the pixels are turned as PIL.ImageOps.exif_transpose turns them.
// JPEG decoding uses libjpeg's defaults (the accurate integer IDCT, fancy upsampling), as Pillow does.
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>

#include <jpeglib.h>
#include <libexif/exif-data.h>
#include <png.h>
#include <unistd.h>

#include "internal.hpp"

namespace smat {
namespace detail {
namespace {

struct FileCloser {
    void operator()(std::FILE* f) const { if (f) std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

int exif_orientation(const unsigned char* data, std::size_t size) {
    // `data` starts with "Exif\0\0" (JPEG APP1) or is bare TIFF (PNG eXIf: prefixed here).
    std::vector<unsigned char> buffer;
    if (size < 6 || std::memcmp(data, "Exif\0\0", 6) != 0) {
        buffer.assign({'E', 'x', 'i', 'f', 0, 0});
        buffer.insert(buffer.end(), data, data + size);
        data = buffer.data();
        size = buffer.size();
    }
    ExifData* exif = exif_data_new();
    if (!exif) return 1;
    exif_data_unset_option(exif, EXIF_DATA_OPTION_FOLLOW_SPECIFICATION);  // read, do not "fix" the data
    exif_data_load_data(exif, data, static_cast<unsigned int>(size));
    int orientation = 1;
    if (ExifEntry* entry = exif_content_get_entry(exif->ifd[EXIF_IFD_0], EXIF_TAG_ORIENTATION)) {
        if (entry->format == EXIF_FORMAT_SHORT && entry->components >= 1 && entry->size >= 2)
            orientation = exif_get_short(entry->data, exif_data_get_byte_order(exif));
    }
    exif_data_unref(exif);
    return orientation;
}

template <typename T>
void orient(std::vector<T>& pixels, int& width, int& height, int channels, int orientation) {
    if (orientation < 2 || orientation > 8) return;
    const int w = width, h = height;
    const bool swap = orientation >= 5;
    const int ow = swap ? h : w, oh = swap ? w : h;
    std::vector<T> out(pixels.size());
    for (int y = 0; y < oh; ++y) {
        for (int x = 0; x < ow; ++x) {
            int sx = x, sy = y;
            switch (orientation) {
                case 2: sx = w - 1 - x; sy = y; break;                 // mirror left-right
                case 3: sx = w - 1 - x; sy = h - 1 - y; break;         // rotate 180
                case 4: sx = x; sy = h - 1 - y; break;                 // mirror top-bottom
                case 5: sx = y; sy = x; break;                         // transpose
                case 6: sx = y; sy = h - 1 - x; break;                 // rotate 90 clockwise
                case 7: sx = w - 1 - y; sy = h - 1 - x; break;         // transverse
                case 8: sx = w - 1 - y; sy = x; break;                 // rotate 90 counter-clockwise
            }
            std::memcpy(&out[(static_cast<std::size_t>(y) * ow + x) * channels],
                        &pixels[(static_cast<std::size_t>(sy) * w + sx) * channels], sizeof(T) * channels);
        }
    }
    pixels.swap(out);
    width = ow;
    height = oh;
}

void check_dimensions(const std::string& path, long long width, long long height) {
    if (width < 1 || height < 1) fail(Status::BadImage, "cannot read image " + path + ": it has no pixels");
    if (width * height > 178956970LL) {  // Pillow's decompression-bomb error threshold (2 x 89.5 megapixels)
        fail(Status::BadImage, "image " + path + " is too large to decode safely (a decompression bomb?)");
    }
}

// -- PNG ------------------------------------------------------------------------------------------------
struct PngError {
    std::string message;
};

void png_error_fn(png_structp png, png_const_charp message) {
    auto* error = static_cast<PngError*>(png_get_error_ptr(png));
    error->message = message ? message : "PNG error";
    png_longjmp(png, 1);
}
void png_warning_fn(png_structp, png_const_charp) {}

Decoded decode_png(std::FILE* file, const std::string& path) {
    PngError error;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &error, png_error_fn, png_warning_fn);
    if (!png) fail(Status::OutOfMemory, "cannot allocate a PNG reader");
    png_infop info = png_create_info_struct(png);
    Decoded decoded;
    std::vector<png_bytep> rows;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, nullptr);
        fail(Status::BadImage, "cannot read image " + path + ": " + error.message);
    }
    png_init_io(png, file);
    png_set_user_limits(png, 1000000, 1000000);
    png_read_info(png, info);
    const png_uint_32 width = png_get_image_width(png, info), height = png_get_image_height(png, info);
    const int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
    try {
        check_dimensions(path, width, height);
    } catch (...) {
        png_destroy_read_struct(&png, &info, nullptr);
        throw;
    }
    if (color == PNG_COLOR_TYPE_PALETTE) {
        png_set_palette_to_rgb(png);
        if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);  // Pillow: P with transparency -> RGBA
    }
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    // Pillow keeps 16-bit grayscale (mode I;16) and reads 16-bit colour as its high byte
    const bool gray = !(color & PNG_COLOR_MASK_COLOR) && color != PNG_COLOR_TYPE_PALETTE;
    decoded.sixteen = depth == 16 && gray && !(color & PNG_COLOR_MASK_ALPHA);
    if (depth == 16 && !decoded.sixteen) png_set_strip_16(png);
    if (decoded.sixteen) png_set_swap(png);  // host order (little-endian)
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    decoded.width = static_cast<int>(width);
    decoded.height = static_cast<int>(height);
    decoded.channels = png_get_channels(png, info);
    const std::size_t row_bytes = png_get_rowbytes(png, info);
    std::uint8_t* base = nullptr;
    if (decoded.sixteen) {
        decoded.wide.resize(static_cast<std::size_t>(width) * height * decoded.channels);
        base = reinterpret_cast<std::uint8_t*>(decoded.wide.data());
    } else {
        decoded.narrow.resize(static_cast<std::size_t>(height) * row_bytes);
        base = decoded.narrow.data();
    }
    rows.resize(height);
    for (png_uint_32 y = 0; y < height; ++y) rows[y] = base + y * row_bytes;
    png_read_image(png, rows.data());
    png_read_end(png, info);
    int orientation = 1;
    png_uint_32 exif_size = 0;
    png_bytep exif = nullptr;
    if (png_get_eXIf_1(png, info, &exif_size, &exif) && exif && exif_size > 0) orientation = exif_orientation(exif, exif_size);
    png_destroy_read_struct(&png, &info, nullptr);
    if (decoded.sixteen) orient(decoded.wide, decoded.width, decoded.height, decoded.channels, orientation);
    else orient(decoded.narrow, decoded.width, decoded.height, decoded.channels, orientation);
    return decoded;
}

// -- JPEG -----------------------------------------------------------------------------------------------
struct JpegError {
    jpeg_error_mgr manager;
    std::jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
    bool corrupt = false;
};

void jpeg_exit(j_common_ptr cinfo) {
    auto* error = reinterpret_cast<JpegError*>(cinfo->err);
    (*cinfo->err->format_message)(cinfo, error->message);
    std::longjmp(error->jump, 1);
}
void jpeg_warning(j_common_ptr cinfo, int level) {
    // A warning is corrupt data (a truncated file, a bad Huffman code): Pillow refuses such files, so do we.
    auto* error = reinterpret_cast<JpegError*>(cinfo->err);
    if (level < 0 && !error->corrupt) {
        (*cinfo->err->format_message)(cinfo, error->message);
        error->corrupt = true;
    }
}

Decoded decode_jpeg(std::FILE* file, const std::string& path) {
    jpeg_decompress_struct cinfo;
    JpegError error;
    cinfo.err = jpeg_std_error(&error.manager);
    error.manager.error_exit = jpeg_exit;
    error.manager.emit_message = jpeg_warning;
    Decoded decoded;
    if (setjmp(error.jump)) {
        jpeg_destroy_decompress(&cinfo);
        fail(Status::BadImage, "cannot read image " + path + ": " + error.message);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_stdio_src(&cinfo, file);
    jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&cinfo);
        fail(Status::BadImage, "cannot read image " + path + ": CMYK JPEGs are not supported; convert it to RGB");
    }
    try {
        check_dimensions(path, cinfo.image_width, cinfo.image_height);
    } catch (...) {
        jpeg_destroy_decompress(&cinfo);
        throw;
    }
    int orientation = 1;
    for (jpeg_saved_marker_ptr marker = cinfo.marker_list; marker; marker = marker->next) {
        if (marker->marker == JPEG_APP0 + 1 && marker->data_length >= 6 && std::memcmp(marker->data, "Exif\0\0", 6) == 0) {
            orientation = exif_orientation(marker->data, marker->data_length);
            break;
        }
    }
    cinfo.out_color_space = cinfo.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&cinfo);
    decoded.width = static_cast<int>(cinfo.output_width);
    decoded.height = static_cast<int>(cinfo.output_height);
    decoded.channels = cinfo.output_components;
    const std::size_t row_bytes = static_cast<std::size_t>(decoded.width) * decoded.channels;
    decoded.narrow.resize(row_bytes * decoded.height);
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = decoded.narrow.data() + cinfo.output_scanline * row_bytes;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    if (error.corrupt) fail(Status::BadImage, "cannot read image " + path + ": " + error.message);
    orient(decoded.narrow, decoded.width, decoded.height, decoded.channels, orientation);
    return decoded;
}

}  // namespace

Decoded decode_file(const std::string& path, bool /*as_mask*/) {
    File file(std::fopen(path.c_str(), "rb"));
    if (!file) fail(Status::NotFound, "image not found: " + path);
    unsigned char magic[8] = {0};
    const std::size_t got = std::fread(magic, 1, sizeof magic, file.get());
    std::rewind(file.get());
    if (got >= 8 && png_sig_cmp(magic, 0, 8) == 0) return decode_png(file.get(), path);
    if (got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) return decode_jpeg(file.get(), path);
    fail(Status::BadImage, "cannot read image " + path + ": not a PNG or JPEG file");
}

}  // namespace detail

Image read_image(const std::string& path) {
    detail::Decoded d = detail::decode_file(path, false);
    Image image;
    image.width = d.width;
    image.height = d.height;
    const std::size_t count = static_cast<std::size_t>(d.width) * d.height;
    image.pixels.resize(count * 3);
    for (std::size_t i = 0; i < count; ++i) {
        std::uint8_t* out = &image.pixels[i * 3];
        if (d.sixteen) {  // 16-bit grayscale: 8 bits kept (the C++ image is 8-bit)
            out[0] = out[1] = out[2] = static_cast<std::uint8_t>(d.wide[i] >> 8);
        } else if (d.channels <= 2) {
            out[0] = out[1] = out[2] = d.narrow[i * d.channels];
        } else {
            std::memcpy(out, &d.narrow[i * d.channels], 3);
        }
    }
    return image;
}

MaskPrompt read_mask(const std::string& path) {
    detail::Decoded d = detail::decode_file(path, true);
    MaskPrompt mask;
    mask.width = d.width;
    mask.height = d.height;
    const std::size_t count = static_cast<std::size_t>(d.width) * d.height;
    mask.pixels.assign(count, 0);
    const int c = d.channels;
    auto sample = [&](std::size_t i, int k) -> unsigned { return d.sixteen ? d.wide[i * c + k] : d.narrow[i * c + k]; };
    const unsigned opaque = d.sixteen ? 65535u : 255u;
    const bool has_alpha = c == 2 || c == 4;
    bool alpha_is_mask = false;
    if (has_alpha)
        for (std::size_t i = 0; i < count && !alpha_is_mask; ++i) alpha_is_mask = sample(i, c - 1) < opaque;
    for (std::size_t i = 0; i < count; ++i) {
        unsigned value = 0;
        if (alpha_is_mask) value = sample(i, c - 1);
        else
            for (int k = 0; k < (has_alpha ? c - 1 : c); ++k) value |= sample(i, k);
        mask.pixels[i] = value ? 1 : 0;
    }
    return mask;
}

void write_alpha_png(const std::string& path, const Alpha& alpha) {
    if (alpha.width < 1 || alpha.height < 1 || alpha.data.size() != static_cast<std::size_t>(alpha.width) * alpha.height)
        detail::fail(Status::InvalidArgument, "the alpha to write is empty or its size does not match its data");
    const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
    std::vector<std::uint8_t> row(static_cast<std::size_t>(alpha.width));
    {
        std::FILE* raw = std::fopen(tmp.c_str(), "wb");
        if (!raw) detail::fail(Status::NotFound, "cannot write " + path + ": " + std::strerror(errno));
        detail::File file(raw);
        detail::PngError error;
        png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &error, detail::png_error_fn, detail::png_warning_fn);
        png_infop info = png ? png_create_info_struct(png) : nullptr;
        if (!png || !info) {
            png_destroy_write_struct(&png, &info);
            std::remove(tmp.c_str());
            detail::fail(Status::OutOfMemory, "cannot allocate a PNG writer");
        }
        if (setjmp(png_jmpbuf(png))) {
            png_destroy_write_struct(&png, &info);
            file.reset();
            std::remove(tmp.c_str());
            detail::fail(Status::Internal, "cannot write " + path + ": " + error.message);
        }
        png_init_io(png, raw);
        png_set_IHDR(png, info, alpha.width, alpha.height, 8, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
        png_write_info(png, info);
        for (int y = 0; y < alpha.height; ++y) {
            for (int x = 0; x < alpha.width; ++x) {  // smat_deploy.images.to_uint8: clip, * 255 + 0.5, truncate
                float v = alpha.data[static_cast<std::size_t>(y) * alpha.width + x];
                v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
                row[x] = static_cast<std::uint8_t>(v * 255.0f + 0.5f);
            }
            png_write_row(png, row.data());
        }
        png_write_end(png, info);
        png_destroy_write_struct(&png, &info);
        if (std::fflush(raw) != 0 || ::fsync(::fileno(raw)) != 0) {
            file.reset();
            std::remove(tmp.c_str());
            detail::fail(Status::Internal, "cannot write " + path + ": " + std::strerror(errno));
        }
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        const std::string reason = std::strerror(errno);
        std::remove(tmp.c_str());
        detail::fail(Status::NotFound, "cannot write " + path + ": " + reason);
    }
}

}  // namespace smat
