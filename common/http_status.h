/* http_status: reason phrases for HTTP status codes, for the daemon and the test mock. */
#ifndef LLMUX_HTTP_STATUS_H
#define LLMUX_HTTP_STATUS_H

const char *http_status_reason(int status);

#endif
