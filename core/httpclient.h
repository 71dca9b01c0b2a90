/* The outbound HTTP client behind http.request (bind_http.c). */
#ifndef SB_HTTPCLIENT_H
#define SB_HTTPCLIENT_H

int sb_httpclient_init(long max_response_bytes, int max_connections);
void sb_httpclient_configure(long max_response_bytes);
/* Call after every job is gone: transfers belong to jobs. */
void sb_httpclient_shutdown(void);

#endif
