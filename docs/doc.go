// Package docs holds the project's documentation. It has no code: its test
// keeps packages.md true of the modules.
package docs
