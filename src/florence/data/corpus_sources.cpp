// The corpus builders' readers of source files: OpenClipArt SVG metadata (libxml2) and emoji PNGs
// composited on white (OpenCV); split from corpus.cpp, which holds the builders themselves.
#include <fmt/format.h>
#include <libxml/parser.h>
#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "florence/core/error.h"
#include "florence/data/corpus.h"
#include "florence/data/corpus_detail.h"
#include "florence/data/transforms.h"

namespace florence::data {

namespace detail {

std::string collapse_ws(const std::string& s) {
  std::string out;
  bool space = false;
  for (unsigned char c : s) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
      space = !out.empty();
    } else {
      if (space) out.push_back(' ');
      space = false;
      out.push_back(char(c));
    }
  }
  return out;
}

}  // namespace detail

// ------------------------------------------------------------------------------------------------
// SVG metadata (libxml2)
// ------------------------------------------------------------------------------------------------

bool read_svg_metadata(const std::string& path, SvgMetadata& out, std::string& error) {
  out = SvgMetadata{};
  xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
  if (!ctxt) {
    error = "xmlNewParserCtxt failed";
    return false;
  }
  // No network access, no DTD loading / entity substitution; HUGE lifts the text-node size limit
  // that some clip-art files with embedded bitmaps exceed.
  xmlDocPtr doc = xmlCtxtReadFile(ctxt, path.c_str(), nullptr,
                                  XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING | XML_PARSE_HUGE);
  if (!doc) {
    const xmlError* e = xmlCtxtGetLastError(ctxt);
    error = e && e->message ? detail::collapse_ws(e->message) : "not well-formed XML";
    xmlFreeParserCtxt(ctxt);
    return false;
  }
  xmlXPathContextPtr xp = xmlXPathNewContext(doc);
  xmlXPathRegisterNs(xp, BAD_CAST "rdf", BAD_CAST "http://www.w3.org/1999/02/22-rdf-syntax-ns#");
  xmlXPathRegisterNs(xp, BAD_CAST "dc", BAD_CAST "http://purl.org/dc/elements/1.1/");

  auto eval = [&](const char* expr, xmlNodePtr ctx) -> std::vector<xmlNodePtr> {
    std::vector<xmlNodePtr> nodes;
    xp->node = ctx;
    xmlXPathObjectPtr r = xmlXPathEvalExpression(BAD_CAST expr, xp);
    if (r && r->nodesetval)
      for (int i = 0; i < r->nodesetval->nodeNr; ++i) nodes.push_back(r->nodesetval->nodeTab[i]);
    if (r) xmlXPathFreeObject(r);
    return nodes;
  };
  // Text of an element: its text and CDATA descendants, at most kMaxMetadataBytes. Entity
  // references are not expanded (xmlNodeGetContent would: a few hundred bytes of nested entity
  // declarations in the file's internal DTD then expand to gigabytes, "billion laughs").
  auto content = [](xmlNodePtr n) {
    constexpr size_t kMaxMetadataBytes = 64 * 1024;
    std::string s;
    std::function<void(xmlNodePtr)> walk = [&](xmlNodePtr e) {
      for (xmlNodePtr c = e->children; c != nullptr && s.size() < kMaxMetadataBytes; c = c->next) {
        if ((c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) && c->content != nullptr) {
          s += reinterpret_cast<const char*>(c->content);
        } else if (c->type == XML_ELEMENT_NODE) {
          walk(c);
        }
      }
    };
    walk(n);
    if (s.size() > kMaxMetadataBytes) {
      size_t cut = kMaxMetadataBytes;
      while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;  // keep UTF-8 whole
      s.resize(cut);
    }
    return detail::collapse_ws(s);
  };
  // The described work is the child of rdf:RDF that carries Dublin Core fields (cc:Work); the
  // dc:title elements nested in dc:creator / dc:publisher agents are artist names, not titles.
  auto works = eval("//rdf:RDF/*[dc:title or dc:description or dc:subject]", xmlDocGetRootElement(doc));
  if (!works.empty()) {
    xmlNodePtr w = works.front();
    if (auto t = eval("dc:title", w); !t.empty()) out.title = content(t.front());
    if (auto d = eval("dc:description", w); !d.empty()) out.description = content(d.front());
    for (xmlNodePtr subject : eval("dc:subject", w)) {
      auto items = eval(".//rdf:li", subject);
      if (items.empty()) {
        std::string s = content(subject);
        if (!s.empty()) out.keywords.push_back(s);
      }
      for (xmlNodePtr li : items) {
        std::string s = content(li);
        if (!s.empty()) out.keywords.push_back(s);
      }
    }
  }
  xmlXPathFreeContext(xp);
  xmlFreeDoc(doc);
  xmlFreeParserCtxt(ctxt);
  return true;
}

std::string svg_text(const SvgMetadata& m, const std::vector<std::string>& fields) {
  std::vector<std::string> parts;
  for (const auto& f : fields) {
    std::string part;
    if (f == "title") {
      part = m.title;
    } else if (f == "description") {
      part = m.description;
    } else if (f == "keywords") {
      for (const auto& k : m.keywords) part += (part.empty() ? "" : ", ") + k;
    } else {
      throw Error("openclipart: unknown text field '" + f + "' (title | description | keywords)");
    }
    if (!part.empty()) parts.push_back(part);
  }
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : ". ") + p;
  return out;
}

// ------------------------------------------------------------------------------------------------
// Images
// ------------------------------------------------------------------------------------------------

namespace {
std::vector<uint8_t> composite_on_white_png_unchecked(const std::vector<uint8_t>& encoded, int size);
}  // namespace

std::vector<uint8_t> composite_on_white_png(const std::vector<uint8_t>& encoded, int size) {
  if (encoded.empty()) return {};
  if (auto wh = probe_image_size(encoded.data(), encoded.size()); wh && double(wh->first) * double(wh->second) > double(kDefaultMaxPixels)) {  // no int64 overflow (fuzz/regressions/image)
    throw ImageTooLarge(fmt::format("image of {}x{} pixels is over the {} pixel limit", wh->first, wh->second,
                                    kDefaultMaxPixels));
  }
  try {
    return composite_on_white_png_unchecked(encoded, size);
  } catch (const cv::Exception&) {
    return {};  // undecodable, or OpenCV ran out of memory on it: a failed item, not a failed build
  }
}

namespace {

std::vector<uint8_t> composite_on_white_png_unchecked(const std::vector<uint8_t>& encoded, int size) {
  cv::Mat img = cv::imdecode(cv::Mat(1, int(encoded.size()), CV_8UC1, const_cast<uint8_t*>(encoded.data())),
                             cv::IMREAD_UNCHANGED);
  if (!img.empty() && int64_t(img.rows) * img.cols > kDefaultMaxPixels)
    throw ImageTooLarge(fmt::format("image of {}x{} pixels is over the {} pixel limit", img.cols, img.rows,
                                    kDefaultMaxPixels));
  if (img.empty() || img.rows <= 0 || img.cols <= 0) return {};
  if (img.depth() == CV_16U) img.convertTo(img, CV_8U, 1.0 / 257.0);
  if (img.depth() != CV_8U) return {};
  cv::Mat bgr, alpha;
  switch (img.channels()) {
    case 1: cv::cvtColor(img, bgr, cv::COLOR_GRAY2BGR); break;
    case 3: bgr = img; break;
    case 4: {
      std::vector<cv::Mat> ch;
      cv::split(img, ch);
      alpha = ch[3];
      ch.resize(3);
      cv::merge(ch, bgr);
      break;
    }
    default: return {};
  }
  const int canvas = size > 0 ? size : std::max(img.cols, img.rows);
  if (bgr.cols > canvas || bgr.rows > canvas) {
    const double s = std::min(double(canvas) / bgr.cols, double(canvas) / bgr.rows);
    const cv::Size sz(std::max(1, int(std::lround(bgr.cols * s))), std::max(1, int(std::lround(bgr.rows * s))));
    cv::resize(bgr, bgr, sz, 0, 0, cv::INTER_AREA);
    if (!alpha.empty()) cv::resize(alpha, alpha, sz, 0, 0, cv::INTER_AREA);
  }
  cv::Mat out(canvas, canvas, CV_8UC3, cv::Scalar(255, 255, 255));
  const cv::Rect roi((canvas - bgr.cols) / 2, (canvas - bgr.rows) / 2, bgr.cols, bgr.rows);
  cv::Mat dst = out(roi);
  if (alpha.empty()) {
    bgr.copyTo(dst);
  } else {
    // out = a * fg + (1 - a) * 255, per channel, a = alpha / 255 (straight, non-premultiplied
    // alpha as PNG stores it).
    cv::Mat a, fg, bg;
    alpha.convertTo(a, CV_32F, 1.0 / 255.0);
    cv::cvtColor(a, a, cv::COLOR_GRAY2BGR);
    bgr.convertTo(fg, CV_32FC3);
    cv::Mat inv = cv::Scalar(1.0, 1.0, 1.0) - a;
    cv::Mat blended = fg.mul(a) + inv * 255.0;
    blended.convertTo(dst, CV_8UC3);  // saturating round
  }
  std::vector<uint8_t> png;
  if (!cv::imencode(".png", out, png)) return {};
  return png;
}

}  // namespace

}  // namespace florence::data
