"""The catalog web page: a static ``index.html`` made from the verified catalog.

Above ``store/`` (it verifies the catalog with the site's TUF client) and
``catalog/`` (it takes the catalog's lock while it writes into it); only the
command line is above it.
"""
