/* safetensors parser (untrusted input) and atomic writer.
 *
 * The header is first checked by a strict, non-recursive RFC 8259 validator
 * (depth limit, duplicate keys, 64-bit integer range, no NUL in strings):
 * json-glib 1.6 alone accepts comments, single quotes, hex numbers and
 * trailing data, silently keeps the last of duplicate keys, wraps integers
 * that overflow 64 bits and recurses without a depth limit. Only then is
 * the header handed to json-glib to build the tree. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

struct _WsiSafetensors
{
  GBytes *bytes;                /* whole file */
  const uint8_t *data;          /* data section */
  uint64_t data_size;
  WsiTensor *tensors;           /* sorted by offset */
  size_t n_tensors;
  char **names;                 /* owned names */
  float **converted;            /* per tensor, lazily */
  GHashTable *by_name;          /* name -> WsiTensor* */
  char **meta_keys;             /* sorted, NULL-terminated */
  GHashTable *meta;             /* key -> value (owned) */
};

static const struct
{
  const char *name;
  size_t size;
} dtypes[WSI_DTYPE_COUNT] = {
  [WSI_DTYPE_BOOL] = {"BOOL", 1},
  [WSI_DTYPE_U8] = {"U8", 1},
  [WSI_DTYPE_I8] = {"I8", 1},
  [WSI_DTYPE_U16] = {"U16", 2},
  [WSI_DTYPE_I16] = {"I16", 2},
  [WSI_DTYPE_F16] = {"F16", 2},
  [WSI_DTYPE_BF16] = {"BF16", 2},
  [WSI_DTYPE_U32] = {"U32", 4},
  [WSI_DTYPE_I32] = {"I32", 4},
  [WSI_DTYPE_F32] = {"F32", 4},
  [WSI_DTYPE_U64] = {"U64", 8},
  [WSI_DTYPE_I64] = {"I64", 8},
  [WSI_DTYPE_F64] = {"F64", 8},
};

const char *
wsi_dtype_name (WsiDtype dtype)
{
  return (unsigned) dtype < WSI_DTYPE_COUNT ? dtypes[dtype].name : "?";
}

size_t
wsi_dtype_size (WsiDtype dtype)
{
  return (unsigned) dtype < WSI_DTYPE_COUNT ? dtypes[dtype].size : 0;
}

static void G_GNUC_PRINTF (3, 4)
set_err (char *err, size_t errlen, const char *fmt, ...)
{
  va_list ap;

  if (!err || errlen == 0)
    return;
  va_start (ap, fmt);
  g_vsnprintf (err, errlen, fmt, ap);
  va_end (ap);
}

/* ------------------------------------------------------------ validator */

typedef struct
{
  const char *start, *p, *end;
  char *err;
  size_t errlen;
} Lexer;

#define LEX_FAIL(lx, ...) G_STMT_START {                                \
    char _m[256];                                                       \
    g_snprintf (_m, sizeof _m, __VA_ARGS__);                            \
    set_err ((lx)->err, (lx)->errlen, "bad JSON header at byte %zu: %s", \
        (size_t) ((lx)->p - (lx)->start), _m);                          \
    return FALSE;                                                       \
  } G_STMT_END

static void
lex_skip_ws (Lexer * lx)
{
  while (lx->p < lx->end && (*lx->p == ' ' || *lx->p == '\t'
          || *lx->p == '\n' || *lx->p == '\r'))
    lx->p++;
}

static int
hex4 (const char *s)
{
  int v = 0;

  for (int i = 0; i < 4; i++) {
    int c = s[i], d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      d = c - 'A' + 10;
    else
      return -1;
    v = v * 16 + d;
  }
  return v;
}

/* At '"'. Appends the decoded string to @out when not NULL. */
static gboolean
lex_string (Lexer * lx, GString * out)
{
  lx->p++;
  for (;;) {
    unsigned char c;

    if (lx->p >= lx->end)
      LEX_FAIL (lx, "unterminated string");
    c = (unsigned char) *lx->p;
    if (c == '"') {
      lx->p++;
      return TRUE;
    }
    if (c < 0x20)
      LEX_FAIL (lx, "control character 0x%02x in a string", c);
    if (c != '\\') {
      if (out)
        g_string_append_c (out, (char) c);
      lx->p++;
      continue;
    }
    if (lx->end - lx->p < 2)
      LEX_FAIL (lx, "unterminated escape");
    c = (unsigned char) lx->p[1];
    if (c == 'u') {
      int cp, lo;

      if (lx->end - lx->p < 6 || (cp = hex4 (lx->p + 2)) < 0)
        LEX_FAIL (lx, "bad \\u escape");
      lx->p += 6;
      if (cp == 0)
        LEX_FAIL (lx, "NUL character (\\u0000) in a string");
      if (cp >= 0xDC00 && cp <= 0xDFFF)
        LEX_FAIL (lx, "unpaired low surrogate \\u%04x", cp);
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (lx->end - lx->p < 6 || lx->p[0] != '\\' || lx->p[1] != 'u'
            || (lo = hex4 (lx->p + 2)) < 0 || lo < 0xDC00 || lo > 0xDFFF)
          LEX_FAIL (lx, "unpaired high surrogate \\u%04x", cp);
        lx->p += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      }
      if (out)
        g_string_append_unichar (out, (gunichar) cp);
      continue;
    }
    switch (c) {
      case '"':
      case '\\':
      case '/':
        break;
      case 'b':
        c = '\b';
        break;
      case 'f':
        c = '\f';
        break;
      case 'n':
        c = '\n';
        break;
      case 'r':
        c = '\r';
        break;
      case 't':
        c = '\t';
        break;
      default:
        LEX_FAIL (lx, "bad escape \\%c", c >= 0x20 && c < 0x7f ? c : '?');
    }
    if (out)
      g_string_append_c (out, (char) c);
    lx->p += 2;
  }
}

static gboolean
is_digit (const Lexer * lx)
{
  return lx->p < lx->end && *lx->p >= '0' && *lx->p <= '9';
}

static gboolean
lex_number (Lexer * lx)
{
  const char *digits;
  size_t n_digits;
  gboolean integer = TRUE;

  if (*lx->p == '-')
    lx->p++;
  digits = lx->p;
  if (!is_digit (lx))
    LEX_FAIL (lx, "bad number");
  if (*lx->p == '0') {
    lx->p++;
    if (is_digit (lx))
      LEX_FAIL (lx, "number with a leading zero");
  } else {
    while (is_digit (lx))
      lx->p++;
  }
  n_digits = lx->p - digits;
  if (lx->p < lx->end && *lx->p == '.') {
    integer = FALSE;
    lx->p++;
    if (!is_digit (lx))
      LEX_FAIL (lx, "bad fraction");
    while (is_digit (lx))
      lx->p++;
  }
  if (lx->p < lx->end && (*lx->p == 'e' || *lx->p == 'E')) {
    integer = FALSE;
    lx->p++;
    if (lx->p < lx->end && (*lx->p == '+' || *lx->p == '-'))
      lx->p++;
    if (!is_digit (lx))
      LEX_FAIL (lx, "bad exponent");
    while (is_digit (lx))
      lx->p++;
  }
  /* json-glib would silently wrap larger integers */
  if (integer && (n_digits > 19 || (n_digits == 19
              && memcmp (digits, "9223372036854775807", 19) > 0)))
    LEX_FAIL (lx, "integer %.*s... beyond the 64-bit range", 20, digits);
  return TRUE;
}

static gboolean
lex_literal (Lexer * lx)
{
  static const char *const words[] = { "true", "false", "null" };

  for (guint i = 0; i < G_N_ELEMENTS (words); i++) {
    size_t n = strlen (words[i]);
    if ((size_t) (lx->end - lx->p) >= n && memcmp (lx->p, words[i], n) == 0) {
      lx->p += n;
      return TRUE;
    }
  }
  LEX_FAIL (lx, "unexpected character 0x%02x", (unsigned char) *lx->p);
}

/* Strict JSON check of header[0..n). */
static gboolean
validate_json (const char *text, size_t n, char *err, size_t errlen)
{
  enum
  { VALUE, KEY, AFTER } state = VALUE;
  char stack[WSI_ST_MAX_DEPTH];
  GHashTable *keys[WSI_ST_MAX_DEPTH] = { NULL };
  int depth = 0;
  gboolean ok = FALSE;
  GString *key = g_string_new (NULL);
  Lexer lx = { text, text, text + n, err, errlen };
  Lexer *l = &lx;

#define FAIL(...) G_STMT_START {                                  \
    char _m[300];                                                 \
    g_snprintf (_m, sizeof _m, __VA_ARGS__);                      \
    set_err (err, errlen, "bad JSON header at byte %zu: %s",      \
        (size_t) (l->p - l->start), _m);                          \
    goto out;                                                     \
  } G_STMT_END

  for (;;) {
    lex_skip_ws (l);
    if (state == AFTER && depth == 0) {
      if (l->p != l->end)
        FAIL ("trailing characters after the JSON object");
      ok = TRUE;
      goto out;
    }
    if (l->p >= l->end)
      FAIL ("unexpected end of the header");

    switch (state) {
      case VALUE:
        if (*l->p == '{' || *l->p == '[') {
          if (depth == WSI_ST_MAX_DEPTH)
            FAIL ("nested deeper than %d levels", WSI_ST_MAX_DEPTH);
          stack[depth++] = *l->p++;
          lex_skip_ws (l);
          if (l->p < l->end && *l->p == (stack[depth - 1] == '{' ? '}' : ']')) {
            l->p++;
            depth--;
            state = AFTER;
          } else {
            state = stack[depth - 1] == '{' ? KEY : VALUE;
          }
        } else if (*l->p == '"') {
          if (!lex_string (l, NULL))
            goto out;
          state = AFTER;
        } else if (*l->p == '-' || (*l->p >= '0' && *l->p <= '9')) {
          if (!lex_number (l))
            goto out;
          state = AFTER;
        } else {
          if (!lex_literal (l))
            goto out;
          state = AFTER;
        }
        break;
      case KEY:
        if (*l->p != '"')
          FAIL ("expected a string key");
        g_string_truncate (key, 0);
        if (!lex_string (l, key))
          goto out;
        if (!keys[depth - 1])
          keys[depth - 1] = g_hash_table_new_full (g_str_hash, g_str_equal,
              g_free, NULL);
        if (g_hash_table_contains (keys[depth - 1], key->str))
          FAIL ("duplicate key \"%.200s\"", key->str);
        g_hash_table_add (keys[depth - 1], g_strdup (key->str));
        lex_skip_ws (l);
        if (l->p >= l->end || *l->p != ':')
          FAIL ("expected ':' after a key");
        l->p++;
        state = VALUE;
        break;
      case AFTER:
        if (*l->p == ',') {
          l->p++;
          state = stack[depth - 1] == '{' ? KEY : VALUE;
        } else if (*l->p == (stack[depth - 1] == '{' ? '}' : ']')) {
          l->p++;
          if (keys[depth - 1])
            g_hash_table_remove_all (keys[depth - 1]);
          depth--;
        } else {
          FAIL ("expected ',' or '%c'", stack[depth - 1] == '{' ? '}' : ']');
        }
        break;
    }
  }
#undef FAIL
out:
  for (int i = 0; i < WSI_ST_MAX_DEPTH; i++)
    if (keys[i])
      g_hash_table_unref (keys[i]);
  g_string_free (key, TRUE);
  return ok;
}

/* ------------------------------------------------------------- parsing */

static int
dtype_from_name (const char *s)
{
  for (int i = 0; i < WSI_DTYPE_COUNT; i++)
    if (strcmp (s, dtypes[i].name) == 0)
      return i;
  return -1;
}

static gboolean
read_int_array (JsonNode * node, int64_t * out, guint max, guint * n,
    const char *name, const char *what, char *err, size_t errlen)
{
  JsonArray *arr;

  if (!JSON_NODE_HOLDS_ARRAY (node)) {
    set_err (err, errlen, "tensor \"%s\": %s is not an array", name, what);
    return FALSE;
  }
  arr = json_node_get_array (node);
  *n = json_array_get_length (arr);
  if (*n > max) {
    set_err (err, errlen, "tensor \"%s\": %s has %u entries (at most %u)",
        name, what, *n, max);
    return FALSE;
  }
  for (guint i = 0; i < *n; i++) {
    JsonNode *e = json_array_get_element (arr, i);
    if (!JSON_NODE_HOLDS_VALUE (e) || json_node_get_value_type (e) != G_TYPE_INT64) {
      set_err (err, errlen, "tensor \"%s\": %s[%u] is not an integer", name,
          what, i);
      return FALSE;
    }
    out[i] = json_node_get_int (e);
    if (out[i] < 0) {
      set_err (err, errlen, "tensor \"%s\": %s[%u] = %" G_GINT64_FORMAT
          " is negative", name, what, i, (gint64) out[i]);
      return FALSE;
    }
  }
  return TRUE;
}

static gboolean
parse_tensor_info (const char *name, JsonNode * node, WsiTensor * t,
    uint64_t data_size, char *err, size_t errlen)
{
  JsonObject *o;
  JsonNode *dt, *shape, *offs;
  int64_t off[2];
  guint n_off, n_dims;
  GList *members;
  uint64_t count = 1;
  int d;

  if (name[0] == '\0') {
    set_err (err, errlen, "a tensor has an empty name");
    return FALSE;
  }
  if (!JSON_NODE_HOLDS_OBJECT (node)) {
    set_err (err, errlen, "tensor \"%s\": entry is not an object", name);
    return FALSE;
  }
  o = json_node_get_object (node);
  members = json_object_get_members (o);
  for (GList * m = members; m; m = m->next) {
    const char *k = m->data;
    if (strcmp (k, "dtype") && strcmp (k, "shape") && strcmp (k, "data_offsets")) {
      set_err (err, errlen, "tensor \"%s\": unexpected key \"%.100s\"", name, k);
      g_list_free (members);
      return FALSE;
    }
  }
  g_list_free (members);
  dt = json_object_get_member (o, "dtype");
  shape = json_object_get_member (o, "shape");
  offs = json_object_get_member (o, "data_offsets");
  if (!dt || !shape || !offs) {
    set_err (err, errlen, "tensor \"%s\": missing \"%s\"", name,
        !dt ? "dtype" : !shape ? "shape" : "data_offsets");
    return FALSE;
  }
  if (!JSON_NODE_HOLDS_VALUE (dt) || json_node_get_value_type (dt) != G_TYPE_STRING) {
    set_err (err, errlen, "tensor \"%s\": dtype is not a string", name);
    return FALSE;
  }
  d = dtype_from_name (json_node_get_string (dt));
  if (d < 0) {
    set_err (err, errlen, "tensor \"%s\": unknown dtype \"%.20s\" (known: F32, "
        "F16, BF16, F64, I8..I64, U8..U64, BOOL)", name,
        json_node_get_string (dt));
    return FALSE;
  }
  t->dtype = d;
  if (!read_int_array (shape, t->shape, WSI_ST_MAX_DIMS, &n_dims, name,
          "shape", err, errlen))
    return FALSE;
  t->n_dims = n_dims;
  for (guint i = 0; i < n_dims; i++) {
    if (!g_uint64_checked_mul (&count, count, (uint64_t) t->shape[i])) {
      set_err (err, errlen, "tensor \"%s\": element count overflows", name);
      return FALSE;
    }
  }
  t->n_elements = count;
  if (!read_int_array (offs, off, 2, &n_off, name, "data_offsets", err,
          errlen))
    return FALSE;
  if (n_off != 2) {
    set_err (err, errlen, "tensor \"%s\": data_offsets needs [begin, end]",
        name);
    return FALSE;
  }
  if (off[0] > off[1]) {
    set_err (err, errlen, "tensor \"%s\": data_offsets begin %" G_GINT64_FORMAT
        " > end %" G_GINT64_FORMAT, name, (gint64) off[0], (gint64) off[1]);
    return FALSE;
  }
  if ((uint64_t) off[1] > data_size) {
    set_err (err, errlen, "tensor \"%s\": data_offsets end %" G_GINT64_FORMAT
        " beyond the data section (%" G_GUINT64_FORMAT " bytes)", name,
        (gint64) off[1], (guint64) data_size);
    return FALSE;
  }
  t->offset = off[0];
  t->n_bytes = off[1] - off[0];
  if (!g_uint64_checked_mul (&count, count, dtypes[d].size)) {
    set_err (err, errlen, "tensor \"%s\": byte size overflows", name);
    return FALSE;
  }
  if (count != t->n_bytes) {
    set_err (err, errlen, "tensor \"%s\": shape and dtype %s need %"
        G_GUINT64_FORMAT " bytes, data_offsets hold %" G_GUINT64_FORMAT,
        name, dtypes[d].name, (guint64) count, (guint64) t->n_bytes);
    return FALSE;
  }
  return TRUE;
}

static int
cmp_offset (const void *a, const void *b)
{
  const WsiTensor *x = a, *y = b;

  if (x->offset != y->offset)
    return x->offset < y->offset ? -1 : 1;
  if (x->n_bytes != y->n_bytes)
    return x->n_bytes < y->n_bytes ? -1 : 1;
  return strcmp (x->name, y->name);
}

static gboolean
check_finite (const WsiTensor * t, char *err, size_t errlen)
{
  const uint8_t *p = t->raw;
  uint64_t i;
  int bad = 0;

  switch (t->dtype) {
    case WSI_DTYPE_F32:
      for (i = 0; i < t->n_elements && !bad; i++) {
        uint32_t u;
        memcpy (&u, p + 4 * i, 4);
        u = GUINT32_FROM_LE (u);
        if ((u & 0x7f800000u) == 0x7f800000u)
          bad = (u & 0x007fffffu) ? 1 : 2;
      }
      break;
    case WSI_DTYPE_F16:
    case WSI_DTYPE_BF16:{
      uint16_t mask = t->dtype == WSI_DTYPE_F16 ? 0x7c00 : 0x7f80;
      for (i = 0; i < t->n_elements && !bad; i++) {
        uint16_t u;
        memcpy (&u, p + 2 * i, 2);
        u = GUINT16_FROM_LE (u);
        if ((u & mask) == mask)
          bad = (u & (uint16_t) ~ (mask | 0x8000)) ? 1 : 2;
      }
      break;
    }
    case WSI_DTYPE_F64:
      for (i = 0; i < t->n_elements && !bad; i++) {
        uint64_t u;
        memcpy (&u, p + 8 * i, 8);
        u = GUINT64_FROM_LE (u);
        if ((u & G_GUINT64_CONSTANT (0x7ff0000000000000)) ==
            G_GUINT64_CONSTANT (0x7ff0000000000000))
          bad = (u & G_GUINT64_CONSTANT (0x000fffffffffffff)) ? 1 : 2;
      }
      break;
    default:
      return TRUE;
  }
  if (bad) {
    set_err (err, errlen, "tensor \"%s\": %s at element %" G_GUINT64_FORMAT,
        t->name, bad == 1 ? "NaN" : "Inf", (guint64) (i - 1));
    return FALSE;
  }
  return TRUE;
}

static int
cmp_strptr (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

static gboolean
parse_metadata (WsiSafetensors * st, JsonNode * node, char *err,
    size_t errlen)
{
  JsonObject *o;
  GList *members;
  guint n, i = 0;

  if (!JSON_NODE_HOLDS_OBJECT (node)) {
    set_err (err, errlen, "__metadata__ is not an object");
    return FALSE;
  }
  o = json_node_get_object (node);
  members = json_object_get_members (o);
  n = g_list_length (members);
  st->meta_keys = g_new0 (char *, n + 1);
  for (GList * m = members; m; m = m->next) {
    const char *k = m->data;
    JsonNode *v = json_object_get_member (o, k);
    if (!JSON_NODE_HOLDS_VALUE (v) || json_node_get_value_type (v) != G_TYPE_STRING) {
      set_err (err, errlen, "metadata \"%.100s\": value is not a string", k);
      g_list_free (members);
      return FALSE;
    }
    st->meta_keys[i++] = g_strdup (k);
    g_hash_table_insert (st->meta, st->meta_keys[i - 1],
        g_strdup (json_node_get_string (v)));
  }
  g_list_free (members);
  qsort (st->meta_keys, n, sizeof (char *), cmp_strptr);
  return TRUE;
}

static WsiSafetensors *
parse_bytes (GBytes * bytes, char *err, size_t errlen)
{
  WsiSafetensors *st = g_new0 (WsiSafetensors, 1);
  gsize len;
  const uint8_t *buf = g_bytes_get_data (bytes, &len);
  uint64_t hlen;
  const char *header;
  JsonParser *parser = NULL;
  GError *gerr = NULL;
  JsonObject *root;
  GList *members = NULL;
  size_t i = 0;
  gboolean ok = FALSE;

  st->bytes = bytes;
  st->meta = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, g_free);
  st->by_name = g_hash_table_new (g_str_hash, g_str_equal);

  if (len < 8) {
    set_err (err, errlen, "file is %zu bytes, shorter than the 8-byte header "
        "length", (size_t) len);
    goto out;
  }
  memcpy (&hlen, buf, 8);
  hlen = GUINT64_FROM_LE (hlen);
  if (hlen > WSI_ST_MAX_HEADER) {
    set_err (err, errlen, "header length %" G_GUINT64_FORMAT " exceeds the "
        "%u-byte limit", (guint64) hlen, WSI_ST_MAX_HEADER);
    goto out;
  }
  if (hlen > len - 8) {
    set_err (err, errlen, "header length %" G_GUINT64_FORMAT " runs past the "
        "end of the file (%zu bytes): truncated file?", (guint64) hlen,
        (size_t) len);
    goto out;
  }
  header = (const char *) buf + 8;
  st->data = buf + 8 + hlen;
  st->data_size = len - 8 - hlen;
  if (hlen == 0 || header[0] != '{') {
    set_err (err, errlen, "header does not start with '{'");
    goto out;
  }
  if (!g_utf8_validate (header, hlen, NULL)) {
    set_err (err, errlen, "header is not valid UTF-8 (or holds a NUL byte)");
    goto out;
  }
  if (!validate_json (header, hlen, err, errlen))
    goto out;

  parser = json_parser_new ();
  if (!json_parser_load_from_data (parser, header, hlen, &gerr)) {
    set_err (err, errlen, "bad JSON header: %s", gerr->message);
    g_error_free (gerr);
    goto out;
  }
  root = json_node_get_object (json_parser_get_root (parser));
  members = json_object_get_members (root);
  st->n_tensors = g_list_length (members);
  if (json_object_has_member (root, "__metadata__")) {
    st->n_tensors--;
    if (!parse_metadata (st, json_object_get_member (root, "__metadata__"),
            err, errlen))
      goto out;
  } else {
    st->meta_keys = g_new0 (char *, 1);
  }
  st->tensors = g_new0 (WsiTensor, st->n_tensors);
  st->names = g_new0 (char *, st->n_tensors + 1);
  st->converted = g_new0 (float *, st->n_tensors);
  for (GList * m = members; m; m = m->next) {
    const char *name = m->data;
    WsiTensor *t;
    if (strcmp (name, "__metadata__") == 0)
      continue;
    t = &st->tensors[i];
    st->names[i] = g_strdup (name);
    t->name = st->names[i];
    i++;
    if (!parse_tensor_info (t->name, json_object_get_member (root, name), t,
            st->data_size, err, errlen))
      goto out;
  }
  /* sort by offset: the data section must be covered exactly, in order */
  if (st->n_tensors > 1)
    qsort (st->tensors, st->n_tensors, sizeof (WsiTensor), cmp_offset);
  {
    uint64_t pos = 0;
    for (i = 0; i < st->n_tensors; i++) {
      WsiTensor *t = &st->tensors[i];
      if (t->offset < pos) {
        set_err (err, errlen, "tensor \"%s\" (bytes %" G_GUINT64_FORMAT "..%"
            G_GUINT64_FORMAT ") overlaps tensor \"%s\"", t->name,
            (guint64) t->offset, (guint64) (t->offset + t->n_bytes),
            st->tensors[i - 1].name);
        goto out;
      }
      if (t->offset > pos) {
        set_err (err, errlen, "%" G_GUINT64_FORMAT " unused bytes before "
            "tensor \"%s\" (tensors must be contiguous)",
            (guint64) (t->offset - pos), t->name);
        goto out;
      }
      pos = t->offset + t->n_bytes;
      t->raw = st->data + t->offset;
      g_hash_table_insert (st->by_name, (gpointer) t->name, t);
    }
    if (pos != st->data_size) {
      set_err (err, errlen, "%" G_GUINT64_FORMAT " bytes after the last "
          "tensor (the data section must be covered exactly)",
          (guint64) (st->data_size - pos));
      goto out;
    }
  }
  for (i = 0; i < st->n_tensors; i++)
    if (!check_finite (&st->tensors[i], err, errlen))
      goto out;
  ok = TRUE;

out:
  g_list_free (members);
  if (parser)
    g_object_unref (parser);
  if (!ok) {
    wsi_safetensors_free (st);
    return NULL;
  }
  return st;
}

WsiSafetensors *
wsi_safetensors_parse (const uint8_t * data, size_t len, char *err,
    size_t errlen)
{
  return parse_bytes (g_bytes_new (data, len), err, errlen);
}

WsiSafetensors *
wsi_safetensors_open (const char *path, char *err, size_t errlen)
{
  GError *gerr = NULL;
  GMappedFile *map = g_mapped_file_new (path, FALSE, &gerr);
  GBytes *bytes;
  WsiSafetensors *st;

  if (!map) {
    set_err (err, errlen, "%s", gerr->message);
    g_error_free (gerr);
    return NULL;
  }
  bytes = g_mapped_file_get_bytes (map);
  g_mapped_file_unref (map);
  st = parse_bytes (bytes, err, errlen);
  if (!st && err && errlen) {
    char *msg = g_strdup (err);
    set_err (err, errlen, "%s: %s", path, msg);
    g_free (msg);
  }
  return st;
}

void
wsi_safetensors_free (WsiSafetensors * st)
{
  if (!st)
    return;
  if (st->converted)
    for (size_t i = 0; i < st->n_tensors; i++)
      g_free (st->converted[i]);
  g_free (st->converted);
  g_strfreev (st->names);
  g_free (st->tensors);
  g_hash_table_unref (st->by_name);
  g_hash_table_unref (st->meta);
  g_strfreev (st->meta_keys);
  g_bytes_unref (st->bytes);
  g_free (st);
}

size_t
wsi_safetensors_n_tensors (const WsiSafetensors * st)
{
  return st->n_tensors;
}

const WsiTensor *
wsi_safetensors_tensor (const WsiSafetensors * st, size_t index)
{
  return index < st->n_tensors ? &st->tensors[index] : NULL;
}

const WsiTensor *
wsi_safetensors_find (const WsiSafetensors * st, const char *name)
{
  return g_hash_table_lookup (st->by_name, name);
}

const char *
wsi_safetensors_metadata (const WsiSafetensors * st, const char *key)
{
  return g_hash_table_lookup (st->meta, key);
}

size_t
wsi_safetensors_n_metadata (const WsiSafetensors * st)
{
  return g_hash_table_size (st->meta);
}

const char *
wsi_safetensors_metadata_key (const WsiSafetensors * st, size_t index)
{
  return index < g_hash_table_size (st->meta) ? st->meta_keys[index] : NULL;
}

static float
half_to_float (uint16_t h)
{
  uint32_t sign = (uint32_t) (h & 0x8000) << 16, e = (h >> 10) & 0x1f,
      m = h & 0x3ff, u;
  float f;

  if (e == 0) {                 /* zero / subnormal: m * 2^-24 */
    f = ldexpf ((float) m, -24);
    return sign ? -f : f;
  }
  if (e == 31)
    u = sign | 0x7f800000u | (m << 13);
  else
    u = sign | ((e + 112) << 23) | (m << 13);
  memcpy (&f, &u, 4);
  return f;
}

const float *
wsi_safetensors_f32 (WsiSafetensors * st, const WsiTensor * t, char *err,
    size_t errlen)
{
  size_t idx = t - st->tensors;
  float *out;

  if (idx >= st->n_tensors) {
    set_err (err, errlen, "tensor does not belong to this file");
    return NULL;
  }
  if (st->converted[idx])
    return st->converted[idx];
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
  if (t->dtype == WSI_DTYPE_F32 && ((uintptr_t) t->raw % 4) == 0)
    return (const float *) t->raw;
#endif
  if (t->dtype != WSI_DTYPE_F32 && t->dtype != WSI_DTYPE_F16
      && t->dtype != WSI_DTYPE_BF16 && t->dtype != WSI_DTYPE_F64) {
    set_err (err, errlen, "tensor \"%s\": dtype %s is not a float type",
        t->name, wsi_dtype_name (t->dtype));
    return NULL;
  }
  out = g_try_new (float, MAX (t->n_elements, 1));
  if (!out) {
    set_err (err, errlen, "tensor \"%s\": out of memory", t->name);
    return NULL;
  }
  for (uint64_t i = 0; i < t->n_elements; i++) {
    if (t->dtype == WSI_DTYPE_F32) {
      uint32_t u;
      memcpy (&u, t->raw + 4 * i, 4);
      u = GUINT32_FROM_LE (u);
      memcpy (&out[i], &u, 4);
    } else if (t->dtype == WSI_DTYPE_F64) {
      uint64_t u;
      double d;
      memcpy (&u, t->raw + 8 * i, 8);
      u = GUINT64_FROM_LE (u);
      memcpy (&d, &u, 8);
      if (fabs (d) > G_MAXFLOAT) {
        set_err (err, errlen, "tensor \"%s\": element %" G_GUINT64_FORMAT
            " (%g) overflows float32", t->name, (guint64) i, d);
        g_free (out);
        return NULL;
      }
      out[i] = (float) d;
    } else {
      uint16_t h;
      memcpy (&h, t->raw + 2 * i, 2);
      h = GUINT16_FROM_LE (h);
      if (t->dtype == WSI_DTYPE_F16) {
        out[i] = half_to_float (h);
      } else {
        uint32_t u = (uint32_t) h << 16;
        memcpy (&out[i], &u, 4);
      }
    }
  }
  st->converted[idx] = out;
  return out;
}

/* ------------------------------------------------------ model metadata */

static JsonNode *
parse_json_value (const char *text)
{
  JsonParser *p;
  JsonNode *n = NULL;

  /* metadata values are untrusted too: same strict check first */
  if (!text || !validate_json (text, strlen (text), NULL, 0))
    return NULL;
  p = json_parser_new ();
  if (json_parser_load_from_data (p, text, -1, NULL))
    n = json_node_copy (json_parser_get_root (p));
  g_object_unref (p);
  return n;
}

static gboolean
parse_count (const char *s, gint64 min, gint64 max, gint64 * out)
{
  guint64 v;

  if (!s || !g_ascii_string_to_unsigned (s, 10, 0, G_MAXINT64, &v, NULL))
    return FALSE;
  if ((gint64) v < min || (gint64) v > max)
    return FALSE;
  *out = (gint64) v;
  return TRUE;
}

static gboolean
json_number (JsonNode * n, double *out)
{
  GType t;

  if (!n || !JSON_NODE_HOLDS_VALUE (n))
    return FALSE;
  t = json_node_get_value_type (n);
  if (t == G_TYPE_INT64)
    *out = (double) json_node_get_int (n);
  else if (t == G_TYPE_DOUBLE)
    *out = json_node_get_double (n);
  else
    return FALSE;
  return isfinite (*out);
}

int
wsi_safetensors_check_model_metadata (const WsiSafetensors * st, char *err,
    size_t errlen)
{
  static const char *const required[] = { "format", "format_version", "arch",
    "n_classes", "class_names", "class_colors", "preprocess", "input_layout"
  };
  const char *s;
  gint64 n_classes, v;
  JsonNode *node = NULL;
  JsonArray *arr;
  int ret = -1;

  for (guint i = 0; i < G_N_ELEMENTS (required); i++) {
    if (!wsi_safetensors_metadata (st, required[i])) {
      set_err (err, errlen, "metadata \"%s\" missing (not a gst-wsiseg model "
          "file? see docs/model-format.md)", required[i]);
      return -1;
    }
  }
  s = wsi_safetensors_metadata (st, "format");
  if (strcmp (s, "gst-wsiseg-model") != 0) {
    set_err (err, errlen, "metadata format \"%.60s\" is not "
        "\"gst-wsiseg-model\"", s);
    return -1;
  }
  s = wsi_safetensors_metadata (st, "format_version");
  if (strcmp (s, "1") != 0) {
    set_err (err, errlen, "metadata format_version \"%.20s\" unsupported "
        "(this build reads 1)", s);
    return -1;
  }
  if (wsi_safetensors_metadata (st, "arch")[0] == '\0') {
    set_err (err, errlen, "metadata arch is empty");
    return -1;
  }
  if (!parse_count (wsi_safetensors_metadata (st, "n_classes"), 1, 65536,
          &n_classes)) {
    set_err (err, errlen, "metadata n_classes \"%.20s\" is not an integer in "
        "1..65536", wsi_safetensors_metadata (st, "n_classes"));
    return -1;
  }
  node = parse_json_value (wsi_safetensors_metadata (st, "class_names"));
  if (!node || !JSON_NODE_HOLDS_ARRAY (node)
      || json_array_get_length (arr = json_node_get_array (node)) != n_classes) {
    set_err (err, errlen, "metadata class_names: need a JSON list of %"
        G_GINT64_FORMAT " strings", n_classes);
    goto out;
  }
  for (guint i = 0; i < n_classes; i++) {
    JsonNode *e = json_array_get_element (arr, i);
    if (!JSON_NODE_HOLDS_VALUE (e) || json_node_get_value_type (e) != G_TYPE_STRING) {
      set_err (err, errlen, "metadata class_names[%u] is not a string", i);
      goto out;
    }
  }
  json_node_unref (node);
  node = parse_json_value (wsi_safetensors_metadata (st, "class_colors"));
  if (!node || !JSON_NODE_HOLDS_ARRAY (node)
      || json_array_get_length (arr = json_node_get_array (node)) != n_classes) {
    set_err (err, errlen, "metadata class_colors: need a JSON list of %"
        G_GINT64_FORMAT " [r, g, b]", n_classes);
    goto out;
  }
  for (guint i = 0; i < n_classes; i++) {
    JsonNode *e = json_array_get_element (arr, i);
    JsonArray *c;
    if (!JSON_NODE_HOLDS_ARRAY (e)
        || json_array_get_length (c = json_node_get_array (e)) != 3)
      goto bad_color;
    for (guint j = 0; j < 3; j++) {
      JsonNode *x = json_array_get_element (c, j);
      if (!JSON_NODE_HOLDS_VALUE (x) || json_node_get_value_type (x) != G_TYPE_INT64
          || json_node_get_int (x) < 0 || json_node_get_int (x) > 255)
        goto bad_color;
    }
    continue;
  bad_color:
    set_err (err, errlen, "metadata class_colors[%u] is not [r, g, b] with "
        "integers 0..255", i);
    goto out;
  }
  json_node_unref (node);
  node = NULL;
  s = wsi_safetensors_metadata (st, "preprocess");
  if (strcmp (s, "standardize") == 0) {
    static const char *const keys[] = { "mean", "std" };
    for (guint k = 0; k < 2; k++) {
      double x;
      node = parse_json_value (wsi_safetensors_metadata (st, keys[k]));
      if (!node || !JSON_NODE_HOLDS_ARRAY (node)
          || json_array_get_length (arr = json_node_get_array (node)) != 3)
        goto bad_stat;
      for (guint j = 0; j < 3; j++)
        if (!json_number (json_array_get_element (arr, j), &x)
            || (k == 1 && x <= 0))
          goto bad_stat;
      json_node_unref (node);
      node = NULL;
      continue;
    bad_stat:
      set_err (err, errlen, "metadata %s: need a JSON list of 3 finite "
          "numbers%s (preprocess standardize)", keys[k], k ? " > 0" : "");
      goto out;
    }
  } else if (strcmp (s, "rescale01") != 0 && strcmp (s, "rescale11") != 0) {
    set_err (err, errlen, "metadata preprocess \"%.40s\" is not rescale01, "
        "rescale11 or standardize", s);
    goto out;
  }
  if (strcmp (wsi_safetensors_metadata (st, "input_layout"), "NCHW") != 0) {
    set_err (err, errlen, "metadata input_layout \"%.20s\": only NCHW is "
        "defined", wsi_safetensors_metadata (st, "input_layout"));
    goto out;
  }
  if ((s = wsi_safetensors_metadata (st, "mpp"))) {
    char *end;
    double mpp = g_ascii_strtod (s, &end);
    if (end == s || *end || !isfinite (mpp) || mpp < 0) {
      set_err (err, errlen, "metadata mpp \"%.20s\" is not a number >= 0", s);
      goto out;
    }
  }
  if ((s = wsi_safetensors_metadata (st, "patch_size"))
      && !parse_count (s, 0, 1 << 20, &v)) {
    set_err (err, errlen, "metadata patch_size \"%.20s\" is not an integer "
        ">= 0", s);
    goto out;
  }
  if ((s = wsi_safetensors_metadata (st, "size_multiple"))
      && !parse_count (s, 1, 1 << 16, &v)) {
    set_err (err, errlen, "metadata size_multiple \"%.20s\" is not an integer "
        ">= 1", s);
    goto out;
  }
  ret = 0;
out:
  if (node)
    json_node_unref (node);
  return ret;
}

/* --------------------------------------------------------------- writer */

static gboolean
write_all (int fd, const void *buf, size_t n)
{
  const uint8_t *p = buf;

  while (n > 0) {
    ssize_t w = write (fd, p, MIN (n, (size_t) 1 << 30));
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return FALSE;
    }
    p += w;
    n -= w;
  }
  return TRUE;
}

int
wsi_safetensors_save (const char *path, const WsiTensorSpec * tensors,
    size_t n_tensors, const char *const *metadata, char *err, size_t errlen)
{
  JsonBuilder *b = json_builder_new ();
  JsonGenerator *gen = NULL;
  JsonNode *root = NULL;
  GHashTable *seen = g_hash_table_new (g_str_hash, g_str_equal);
  uint64_t offset = 0;
  char *header = NULL, *tmp = NULL, *dir = NULL;
  gsize hlen;
  GString *hs = NULL;
  uint64_t le;
  int fd = -1, ret = -1;

  json_builder_begin_object (b);
  if (metadata && metadata[0]) {
    json_builder_set_member_name (b, "__metadata__");
    json_builder_begin_object (b);
    for (size_t i = 0; metadata[i]; i += 2) {
      if (!metadata[i + 1] || !g_utf8_validate (metadata[i], -1, NULL)
          || !g_utf8_validate (metadata[i + 1], -1, NULL)) {
        set_err (err, errlen, "metadata \"%s\": missing or non-UTF-8 value",
            metadata[i]);
        goto out;
      }
      if (!g_hash_table_add (seen, (gpointer) metadata[i])) {
        set_err (err, errlen, "metadata \"%s\": duplicate key", metadata[i]);
        goto out;
      }
      json_builder_set_member_name (b, metadata[i]);
      json_builder_add_string_value (b, metadata[i + 1]);
    }
    json_builder_end_object (b);
    g_hash_table_remove_all (seen);
  }
  for (size_t i = 0; i < n_tensors; i++) {
    const WsiTensorSpec *t = &tensors[i];
    uint64_t count = 1, nbytes;

    if (!t->name || !t->name[0] || strcmp (t->name, "__metadata__") == 0
        || !g_utf8_validate (t->name, -1, NULL)) {
      set_err (err, errlen, "tensor %zu: invalid name", i);
      goto out;
    }
    if (!g_hash_table_add (seen, (gpointer) t->name)) {
      set_err (err, errlen, "tensor \"%s\": duplicate name", t->name);
      goto out;
    }
    if (t->n_dims < 0 || t->n_dims > WSI_ST_MAX_DIMS) {
      set_err (err, errlen, "tensor \"%s\": %d dimensions", t->name,
          t->n_dims);
      goto out;
    }
    for (int d = 0; d < t->n_dims; d++)
      if (t->shape[d] < 0
          || !g_uint64_checked_mul (&count, count, (uint64_t) t->shape[d])) {
        set_err (err, errlen, "tensor \"%s\": bad shape", t->name);
        goto out;
      }
    if (!g_uint64_checked_mul (&nbytes, count, 4)
        || offset + nbytes < offset || (count && !t->data)) {
      set_err (err, errlen, "tensor \"%s\": bad size or no data", t->name);
      goto out;
    }
    for (uint64_t k = 0; k < count; k++)
      if (!isfinite (t->data[k])) {
        set_err (err, errlen, "tensor \"%s\": %s at element %" G_GUINT64_FORMAT
            ", not saved", t->name, isnan (t->data[k]) ? "NaN" : "Inf",
            (guint64) k);
        goto out;
      }
    json_builder_set_member_name (b, t->name);
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "dtype");
    json_builder_add_string_value (b, "F32");
    json_builder_set_member_name (b, "shape");
    json_builder_begin_array (b);
    for (int d = 0; d < t->n_dims; d++)
      json_builder_add_int_value (b, t->shape[d]);
    json_builder_end_array (b);
    json_builder_set_member_name (b, "data_offsets");
    json_builder_begin_array (b);
    json_builder_add_int_value (b, (gint64) offset);
    json_builder_add_int_value (b, (gint64) (offset + nbytes));
    json_builder_end_array (b);
    json_builder_end_object (b);
    offset += nbytes;
  }
  json_builder_end_object (b);

  root = json_builder_get_root (b);
  gen = json_generator_new ();
  json_generator_set_root (gen, root);
  header = json_generator_to_data (gen, &hlen);
  hs = g_string_new_len (header, hlen);
  while ((8 + hs->len) % 8)     /* data section 8-byte aligned */
    g_string_append_c (hs, ' ');

  dir = g_path_get_dirname (path);
  {
    char *base = g_path_get_basename (path);
    tmp = g_strdup_printf ("%s/.%s.XXXXXX", dir, base);
    g_free (base);
  }
  fd = g_mkstemp_full (tmp, O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) {
    set_err (err, errlen, "%s: cannot create a temporary file: %s", path,
        g_strerror (errno));
    g_clear_pointer (&tmp, g_free);
    goto out;
  }
  le = GUINT64_TO_LE ((uint64_t) hs->len);
  if (!write_all (fd, &le, 8) || !write_all (fd, hs->str, hs->len))
    goto io_error;
  for (size_t i = 0; i < n_tensors; i++) {
    uint64_t count = 1;
    for (int d = 0; d < tensors[i].n_dims; d++)
      count *= (uint64_t) tensors[i].shape[d];
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
    if (!write_all (fd, tensors[i].data, count * 4))
      goto io_error;
#else
    for (uint64_t k = 0; k < count; k++) {
      uint32_t u;
      memcpy (&u, &tensors[i].data[k], 4);
      u = GUINT32_TO_LE (u);
      if (!write_all (fd, &u, 4))
        goto io_error;
    }
#endif
  }
  if (fsync (fd) != 0)
    goto io_error;
  if (close (fd) != 0) {
    fd = -1;
    goto io_error;
  }
  fd = -1;
  if (g_rename (tmp, path) != 0)
    goto io_error;
  g_clear_pointer (&tmp, g_free);
  {                             /* make the rename durable */
    int dfd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      fsync (dfd);
      close (dfd);
    }
  }
  ret = 0;
  goto out;

io_error:
  set_err (err, errlen, "%s: write failed: %s", path, g_strerror (errno));
out:
  if (fd >= 0)
    close (fd);
  if (tmp) {
    g_unlink (tmp);
    g_free (tmp);
  }
  g_free (dir);
  if (hs)
    g_string_free (hs, TRUE);
  g_free (header);
  if (root)
    json_node_unref (root);
  if (gen)
    g_object_unref (gen);
  g_object_unref (b);
  g_hash_table_unref (seen);
  return ret;
}
