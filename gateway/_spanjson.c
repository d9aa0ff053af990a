/* The reporter's span encoder in C: a slice of Exchange records to the items of a Zipkin v2 JSON list.
 *
 * Writes, for each exchange, the same two spans as gateway.spans.build_spans() + encode_batch() (a property test
 * holds the two to each other, value for value). In Python the encoding was most of what tracing a request costs
 * (docs/performance.md): two dicts per span and a dozen calls per exchange. Here it is one pass over the record.
 *
 * Anything this code does not handle itself goes to the Python encoder given as `fallback`, one exchange at a
 * time: a client address, an upstream or a route's tags not yet in the caches, a field of an unexpected type, a route tag named like
 * one of the gateway's own. The fallback also fills the caches, so the next exchange of that client, upstream or
 * route stays here.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <string.h>

enum {
    F_TRACE_ID,
    F_SERVER_SPAN_ID,
    F_CLIENT_SPAN_ID,
    F_PARENT_ID,
    F_DEBUG,
    F_NAME,
    F_METHOD,
    F_PATH,
    F_HOST,
    F_STATUS_CODE,
    F_UPSTREAM_STATUS_CODE,
    F_ERROR,
    F_CLIENT_HOST,
    F_CLIENT_PORT,
    F_UPSTREAM,
    F_SERVER_START,
    F_SERVER_DURATION,
    F_CLIENT_START,
    F_CLIENT_DURATION,
    F_TAGS,
    FIELD_COUNT
};

static const char *const FIELD_NAMES[FIELD_COUNT] = {
    "trace_id", "server_span_id", "client_span_id", "parent_id", "debug", "name", "method",
    "path", "host", "status_code", "upstream_status_code", "error", "client_host", "client_port",
    "upstream", "server_start", "server_duration", "client_start", "client_duration", "tags",
};

/* What bind() learnt of the Exchange class: its type, and where each slot lives in an instance. A slots class's
 * fields are fixed offsets, read here directly instead of through 20 attribute lookups per exchange. */
typedef struct {
    PyTypeObject *exchange_type;
    Py_ssize_t offsets[FIELD_COUNT];
    PyObject *max_64bit; /* 2**64 - 1 */
    PyObject *sixty_four;
} ModuleState;

static ModuleState *
module_state(PyObject *module)
{
    return (ModuleState *)PyModule_GetState(module);
}

/* --- an output buffer that grows ---------------------------------------------------------------------------- */

typedef struct {
    char *data;
    Py_ssize_t size;
    Py_ssize_t capacity;
} Buffer;

static int
reserve(Buffer *buffer, Py_ssize_t more)
{
    if (buffer->size + more <= buffer->capacity) {
        return 0;
    }
    Py_ssize_t capacity = buffer->capacity ? buffer->capacity : 16384;
    while (capacity < buffer->size + more) {
        if (capacity > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        capacity *= 2;
    }
    char *data = PyMem_Realloc(buffer->data, (size_t)capacity);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buffer->data = data;
    buffer->capacity = capacity;
    return 0;
}

static int
put(Buffer *buffer, const char *bytes, Py_ssize_t length)
{
    if (reserve(buffer, length) < 0) {
        return -1;
    }
    memcpy(buffer->data + buffer->size, bytes, (size_t)length);
    buffer->size += length;
    return 0;
}

#define PUT_LITERAL(buffer, literal) put((buffer), (literal), (Py_ssize_t)(sizeof(literal) - 1))

static int
put_bytes_object(Buffer *buffer, PyObject *bytes)
{
    return put(buffer, PyBytes_AS_STRING(bytes), PyBytes_GET_SIZE(bytes));
}

static const char HEX[] = "0123456789abcdef";

static int
put_hex64(Buffer *buffer, unsigned long long value)
{
    if (reserve(buffer, 16) < 0) {
        return -1;
    }
    char *out = buffer->data + buffer->size;
    for (int i = 15; i >= 0; i--) {
        out[i] = HEX[value & 0xf];
        value >>= 4;
    }
    buffer->size += 16;
    return 0;
}

static int
put_decimal(Buffer *buffer, long long value)
{
    char digits[24];
    char *end = digits + sizeof digits, *start = end;
    /* Negated as unsigned, so that LLONG_MIN has a magnitude too. */
    unsigned long long magnitude = value < 0 ? 0ULL - (unsigned long long)value : (unsigned long long)value;
    do {
        *--start = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    if (value < 0) {
        *--start = '-';
    }
    return put(buffer, start, end - start);
}

/* A JSON string of `text`'s UTF-8, escaping what RFC 8259 requires (quote, backslash, control characters). */
static int
put_json_string(Buffer *buffer, PyObject *text)
{
    Py_ssize_t length;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &length);
    if (utf8 == NULL) {
        return -1; /* lone surrogates: orjson refuses them too */
    }
    if (reserve(buffer, length * 6 + 2) < 0) {
        return -1;
    }
    char *out = buffer->data + buffer->size;
    *out++ = '"';
    for (Py_ssize_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)utf8[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *out++ = (char)c;
            continue;
        }
        *out++ = '\\';
        switch (c) {
        case '"': *out++ = '"'; break;
        case '\\': *out++ = '\\'; break;
        case '\b': *out++ = 'b'; break;
        case '\f': *out++ = 'f'; break;
        case '\n': *out++ = 'n'; break;
        case '\r': *out++ = 'r'; break;
        case '\t': *out++ = 't'; break;
        default:
            *out++ = 'u';
            *out++ = '0';
            *out++ = '0';
            *out++ = HEX[c >> 4];
            *out++ = HEX[c & 0xf];
        }
    }
    *out++ = '"';
    buffer->size = out - buffer->data;
    return 0;
}

/* --- one exchange ------------------------------------------------------------------------------------------- */

#define UNHANDLED 1 /* leave this exchange to the Python encoder */

typedef struct {
    PyObject *local;     /* bytes: the gateway's endpoint JSON */
    PyObject *hosts;     /* dict: client_host -> bytes, its endpoint's address fields (`"ipv4":"..."`) or empty */
    PyObject *upstreams; /* dict: id(upstream) -> (upstream, bytes: its endpoint JSON) */
    PyObject *tag_sets;  /* dict: a route's tags tuple -> bytes, `"key":"value",` for each */
} Fragments;

static PyObject *
field(PyObject *exchange, const ModuleState *state, int index)
{
    return *(PyObject **)((char *)exchange + state->offsets[index]);
}

static int
read_id(PyObject *value, unsigned long long *id)
{
    if (!PyLong_CheckExact(value)) {
        return UNHANDLED;
    }
    *id = PyLong_AsUnsignedLongLong(value);
    if (*id == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear(); /* negative or over 64 bits: not an id this gateway makes */
        return UNHANDLED;
    }
    return 0;
}

/* A status code as build_spans reads it: an int in the C range, or None (*status = -1). */
static int
read_status(PyObject *value, long *status)
{
    if (value == Py_None) {
        *status = -1;
        return 0;
    }
    if (!PyLong_CheckExact(value)) {
        return UNHANDLED;
    }
    *status = PyLong_AsLong(value);
    if ((*status == -1 && PyErr_Occurred()) || *status < 0 || *status > 999999) {
        PyErr_Clear();
        return UNHANDLED;
    }
    return 0;
}

static int
read_seconds(PyObject *value, double *seconds)
{
    if (!PyFloat_CheckExact(value)) {
        return UNHANDLED;
    }
    *seconds = PyFloat_AS_DOUBLE(value);
    /* int() of the microseconds must give what Python's would: finite, and well inside a long long. */
    return isfinite(*seconds) && fabs(*seconds) < 9.0e12 ? 0 : UNHANDLED;
}

typedef struct {
    unsigned long long trace_high, trace_low, server_id, client_id, parent_id;
    int has_trace_high, has_parent, debug;
    PyObject *name, *method, *path, *host, *error;
    long status, upstream_status;
    double server_start, server_duration, client_start, client_duration;
    PyObject *client_address, *upstream, *tags;
    long client_port; /* 0: none */
} Record;

/* A borrowed value of `cache`, or NULL: a miss (no exception) or an error. A key that cannot be hashed is a miss,
 * left to the Python encoder. */
static PyObject *
lookup(PyObject *cache, PyObject *key)
{
    PyObject *value = PyDict_GetItemWithError(cache, key);
    if (value == NULL && PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear();
    }
    return value;
}

static int
read_record(PyObject *exchange, const ModuleState *state, const Fragments *fragments, Record *record)
{
    for (int i = 0; i < FIELD_COUNT; i++) {
        if (field(exchange, state, i) == NULL) {
            return UNHANDLED; /* an unset slot: let Python raise its AttributeError */
        }
    }
    PyObject *trace_id = field(exchange, state, F_TRACE_ID);
    if (!PyLong_CheckExact(trace_id)) {
        return UNHANDLED;
    }
    int wide = PyObject_RichCompareBool(trace_id, state->max_64bit, Py_GT);
    if (wide < 0) {
        return -1;
    }
    record->has_trace_high = wide;
    if (wide) {
        PyObject *high = PyNumber_Rshift(trace_id, state->sixty_four);
        if (high == NULL) {
            return -1;
        }
        int outcome = read_id(high, &record->trace_high);
        Py_DECREF(high);
        if (outcome != 0) {
            return outcome; /* over 128 bits */
        }
        record->trace_low = PyLong_AsUnsignedLongLongMask(trace_id);
        if (record->trace_low == (unsigned long long)-1 && PyErr_Occurred()) {
            return -1;
        }
    }
    else if (read_id(trace_id, &record->trace_low) != 0) {
        return UNHANDLED; /* negative */
    }
    int outcome;
    if ((outcome = read_id(field(exchange, state, F_SERVER_SPAN_ID), &record->server_id)) != 0 ||
        (outcome = read_id(field(exchange, state, F_CLIENT_SPAN_ID), &record->client_id)) != 0) {
        return outcome;
    }
    PyObject *parent = field(exchange, state, F_PARENT_ID);
    record->has_parent = parent != Py_None;
    if (record->has_parent && (outcome = read_id(parent, &record->parent_id)) != 0) {
        return outcome;
    }
    PyObject *debug = field(exchange, state, F_DEBUG);
    if (!PyBool_Check(debug)) {
        return UNHANDLED;
    }
    record->debug = debug == Py_True;
    record->name = field(exchange, state, F_NAME);
    record->method = field(exchange, state, F_METHOD);
    record->path = field(exchange, state, F_PATH);
    record->host = field(exchange, state, F_HOST);
    record->error = field(exchange, state, F_ERROR);
    if (!PyUnicode_CheckExact(record->name) || !PyUnicode_CheckExact(record->method) ||
        !PyUnicode_CheckExact(record->path) || !PyUnicode_CheckExact(record->host) ||
        (record->error != Py_None && !PyUnicode_CheckExact(record->error))) {
        return UNHANDLED;
    }
    if ((outcome = read_status(field(exchange, state, F_STATUS_CODE), &record->status)) != 0 ||
        (outcome = read_status(field(exchange, state, F_UPSTREAM_STATUS_CODE), &record->upstream_status)) != 0 ||
        (outcome = read_seconds(field(exchange, state, F_SERVER_START), &record->server_start)) != 0 ||
        (outcome = read_seconds(field(exchange, state, F_SERVER_DURATION), &record->server_duration)) != 0 ||
        (outcome = read_seconds(field(exchange, state, F_CLIENT_START), &record->client_start)) != 0 ||
        (outcome = read_seconds(field(exchange, state, F_CLIENT_DURATION), &record->client_duration)) != 0) {
        return outcome;
    }

    /* The cached fragments; a miss goes to Python, which fills the cache. */
    record->client_address = lookup(fragments->hosts, field(exchange, state, F_CLIENT_HOST));
    if (record->client_address == NULL) {
        return PyErr_Occurred() ? -1 : UNHANDLED;
    }
    PyObject *port = field(exchange, state, F_CLIENT_PORT);
    record->client_port = 0;
    if (port != Py_None) {
        if (!PyLong_CheckExact(port)) {
            return UNHANDLED;
        }
        record->client_port = PyLong_AsLong(port);
        if (record->client_port == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return UNHANDLED;
        }
    }
    PyObject *upstream = field(exchange, state, F_UPSTREAM);
    PyObject *key = PyLong_FromVoidPtr(upstream);
    if (key == NULL) {
        return -1;
    }
    PyObject *entry = lookup(fragments->upstreams, key);
    Py_DECREF(key);
    if (entry == NULL) {
        return PyErr_Occurred() ? -1 : UNHANDLED;
    }
    /* The entry holds its upstream, so that no other object can have that id while the entry is cached. */
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 2 || PyTuple_GET_ITEM(entry, 0) != upstream) {
        return UNHANDLED;
    }
    record->upstream = PyTuple_GET_ITEM(entry, 1);
    PyObject *tags = field(exchange, state, F_TAGS);
    if (!PyTuple_CheckExact(tags)) {
        return UNHANDLED;
    }
    record->tags = NULL;
    if (PyTuple_GET_SIZE(tags) > 0) {
        record->tags = lookup(fragments->tag_sets, tags);
        if (record->tags == NULL) {
            return PyErr_Occurred() ? -1 : UNHANDLED;
        }
    }
    if (!PyBytes_CheckExact(record->client_address) || !PyBytes_CheckExact(record->upstream) ||
        (record->tags != NULL && !PyBytes_CheckExact(record->tags))) {
        return UNHANDLED;
    }
    return 0;
}

static long long
microseconds(double seconds)
{
    return (long long)(seconds * 1000000.0); /* truncated toward zero, as int() does */
}

static int
put_status_tags(Buffer *buffer, PyObject *error, long status)
{
    if (status >= 0) {
        if (PUT_LITERAL(buffer, ",\"http.status_code\":\"") < 0 || put_decimal(buffer, status) < 0 ||
            PUT_LITERAL(buffer, "\"") < 0) {
            return -1;
        }
    }
    /* As spans._error: the gateway's message if it has one, else a status that is not 1xx-3xx. */
    if (error != Py_None && PyUnicode_GET_LENGTH(error) > 0) {
        return PUT_LITERAL(buffer, ",\"error\":") < 0 || put_json_string(buffer, error) < 0 ? -1 : 0;
    }
    if (status >= 0 && !(100 <= status && status <= 399)) {
        if (PUT_LITERAL(buffer, ",\"error\":\"") < 0 || put_decimal(buffer, status) < 0 ||
            PUT_LITERAL(buffer, "\"") < 0) {
            return -1;
        }
    }
    return 0;
}

static int
put_span(Buffer *buffer, const Record *record, const Fragments *fragments, int server)
{
    if (PUT_LITERAL(buffer, "{\"traceId\":\"") < 0 ||
        (record->has_trace_high && put_hex64(buffer, record->trace_high) < 0) ||
        put_hex64(buffer, record->trace_low) < 0 || PUT_LITERAL(buffer, "\",\"id\":\"") < 0 ||
        put_hex64(buffer, server ? record->server_id : record->client_id) < 0 || PUT_LITERAL(buffer, "\"") < 0) {
        return -1;
    }
    if (record->debug && PUT_LITERAL(buffer, ",\"debug\":true") < 0) {
        return -1;
    }
    if (PyUnicode_GET_LENGTH(record->name) > 0 &&
        (PUT_LITERAL(buffer, ",\"name\":") < 0 || put_json_string(buffer, record->name) < 0)) {
        return -1;
    }
    if (server ? record->has_parent : 1) {
        if (PUT_LITERAL(buffer, ",\"parentId\":\"") < 0 ||
            put_hex64(buffer, server ? record->parent_id : record->server_id) < 0 || PUT_LITERAL(buffer, "\"") < 0) {
            return -1;
        }
    }
    double start = server ? record->server_start : record->client_start;
    if (start != 0.0 && (PUT_LITERAL(buffer, ",\"timestamp\":") < 0 || put_decimal(buffer, microseconds(start)) < 0)) {
        return -1;
    }
    long long duration = microseconds(server ? record->server_duration : record->client_duration);
    if (PUT_LITERAL(buffer, ",\"duration\":") < 0 || put_decimal(buffer, duration > 1 ? duration : 1) < 0) {
        return -1;
    }
    if ((server ? PUT_LITERAL(buffer, ",\"kind\":\"SERVER\",\"localEndpoint\":")
                : PUT_LITERAL(buffer, ",\"kind\":\"CLIENT\",\"localEndpoint\":")) < 0 ||
        put_bytes_object(buffer, fragments->local) < 0 || PUT_LITERAL(buffer, ",") < 0) {
        return -1;
    }
    if (server) {
        /* As spans._client_endpoint: no endpoint at all when there is neither an address nor a port. */
        Py_ssize_t address = PyBytes_GET_SIZE(record->client_address);
        if (address > 0 || record->client_port != 0) {
            if (PUT_LITERAL(buffer, "\"remoteEndpoint\":{") < 0 ||
                (record->client_port != 0 && (PUT_LITERAL(buffer, "\"port\":") < 0 ||
                                              put_decimal(buffer, record->client_port) < 0 ||
                                              (address > 0 && PUT_LITERAL(buffer, ",") < 0))) ||
                put_bytes_object(buffer, record->client_address) < 0 || PUT_LITERAL(buffer, "},") < 0) {
                return -1;
            }
        }
    }
    else if (PUT_LITERAL(buffer, "\"remoteEndpoint\":") < 0 || put_bytes_object(buffer, record->upstream) < 0 ||
             PUT_LITERAL(buffer, ",") < 0) {
        return -1;
    }
    if (PUT_LITERAL(buffer, "\"tags\":{") < 0 || (record->tags != NULL && put_bytes_object(buffer, record->tags) < 0) ||
        PUT_LITERAL(buffer, "\"http.method\":") < 0 || put_json_string(buffer, record->method) < 0 ||
        PUT_LITERAL(buffer, ",\"http.path\":") < 0 || put_json_string(buffer, record->path) < 0) {
        return -1;
    }
    if (PyUnicode_GET_LENGTH(record->host) > 0 &&
        (PUT_LITERAL(buffer, ",\"http.host\":") < 0 || put_json_string(buffer, record->host) < 0)) {
        return -1;
    }
    if (put_status_tags(buffer, record->error, server ? record->status : record->upstream_status) < 0) {
        return -1;
    }
    return PUT_LITERAL(buffer, "}}");
}

/* --- the module --------------------------------------------------------------------------------------------- */

static PyObject *
bind(PyObject *module, PyObject *exchange_type)
{
    ModuleState *state = module_state(module);
    if (!PyType_Check(exchange_type)) {
        PyErr_SetString(PyExc_TypeError, "bind() takes the Exchange class");
        return NULL;
    }
    Py_ssize_t offsets[FIELD_COUNT]; /* kept only once every field is found: a failed bind changes nothing */
    for (int i = 0; i < FIELD_COUNT; i++) {
        PyObject *descriptor = PyObject_GetAttrString(exchange_type, FIELD_NAMES[i]);
        if (descriptor == NULL) {
            return NULL;
        }
        int is_slot = Py_IS_TYPE(descriptor, &PyMemberDescr_Type) &&
                      ((PyMemberDescrObject *)descriptor)->d_member->type == T_OBJECT_EX;
        if (is_slot) {
            offsets[i] = ((PyMemberDescrObject *)descriptor)->d_member->offset;
        }
        Py_DECREF(descriptor);
        if (!is_slot) {
            PyErr_Format(PyExc_TypeError, "Exchange.%s is not a slot", FIELD_NAMES[i]);
            return NULL;
        }
    }
    if (state->max_64bit == NULL) {
        state->max_64bit = PyLong_FromUnsignedLongLong(0xffffffffffffffffULL);
        state->sixty_four = PyLong_FromLong(64);
        if (state->max_64bit == NULL || state->sixty_four == NULL) {
            return NULL;
        }
    }
    memcpy(state->offsets, offsets, sizeof offsets);
    Py_XSETREF(state->exchange_type, (PyTypeObject *)Py_NewRef(exchange_type));
    Py_RETURN_NONE;
}

static PyObject *
encode_exchanges(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    ModuleState *state = module_state(module);
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "encode_exchanges(exchanges, local, hosts, upstreams, tag_sets, fallback)");
        return NULL;
    }
    if (state->exchange_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind() the Exchange class first");
        return NULL;
    }
    Fragments fragments = {args[1], args[2], args[3], args[4]};
    PyObject *fallback = args[5];
    if (!PyBytes_CheckExact(fragments.local) || !PyDict_CheckExact(fragments.hosts) ||
        !PyDict_CheckExact(fragments.upstreams) || !PyDict_CheckExact(fragments.tag_sets)) {
        PyErr_SetString(PyExc_TypeError, "local must be bytes, and the three caches dicts");
        return NULL;
    }
    PyObject *exchanges = PySequence_Fast(args[0], "exchanges must be a sequence");
    if (exchanges == NULL) {
        return NULL;
    }
    Buffer buffer = {NULL, 0, 0};
    Py_ssize_t count = PySequence_Fast_GET_SIZE(exchanges);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *exchange = PySequence_Fast_GET_ITEM(exchanges, i);
        if (i > 0 && PUT_LITERAL(&buffer, ",") < 0) {
            goto error;
        }
        Record record;
        int outcome = Py_IS_TYPE(exchange, state->exchange_type)
                          ? read_record(exchange, state, &fragments, &record)
                          : UNHANDLED;
        if (outcome < 0) {
            goto error;
        }
        if (outcome == 0) {
            if (put_span(&buffer, &record, &fragments, 1) < 0 || PUT_LITERAL(&buffer, ",") < 0 ||
                put_span(&buffer, &record, &fragments, 0) < 0) {
                goto error;
            }
            continue;
        }
        PyObject *items = PyObject_CallOneArg(fallback, exchange);
        if (items == NULL) {
            goto error;
        }
        if (!PyBytes_Check(items)) {
            PyErr_SetString(PyExc_TypeError, "the fallback must return bytes");
            Py_DECREF(items);
            goto error;
        }
        int failed = put_bytes_object(&buffer, items);
        Py_DECREF(items);
        if (failed < 0) {
            goto error;
        }
    }
    Py_DECREF(exchanges);
    PyObject *encoded = PyBytes_FromStringAndSize(buffer.data ? buffer.data : "", buffer.size);
    PyMem_Free(buffer.data);
    return encoded;
error:
    Py_DECREF(exchanges);
    PyMem_Free(buffer.data);
    return NULL;
}

static PyMethodDef methods[] = {
    {"bind", bind, METH_O, "bind(Exchange): learn where the Exchange class keeps its fields."},
    {"encode_exchanges", (PyCFunction)(void (*)(void))encode_exchanges, METH_FASTCALL,
     "encode_exchanges(exchanges, local, hosts, upstreams, tag_sets, fallback) -> bytes: the two spans of each "
     "exchange, as the items of a JSON list (no brackets), comma-separated."},
    {NULL, NULL, 0, NULL},
};

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    Py_VISIT(module_state(module)->exchange_type);
    return 0;
}

static int
module_clear(PyObject *module)
{
    Py_CLEAR(module_state(module)->exchange_type);
    Py_CLEAR(module_state(module)->max_64bit);
    Py_CLEAR(module_state(module)->sixty_four);
    return 0;
}

static void
module_free(void *module)
{
    module_clear((PyObject *)module);
}

static struct PyModuleDef spanjson_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gateway._spanjson",
    .m_doc = "Zipkin v2 JSON for the gateway's exchanges, in C (see gateway/span_payload.py).",
    .m_size = sizeof(ModuleState),
    .m_methods = methods,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__spanjson(void)
{
    return PyModuleDef_Init(&spanjson_module);
}
